package io.lakeshard.hash;

import java.util.Arrays;

import org.apache.spark.unsafe.Platform;
import org.apache.spark.unsafe.types.UTF8String;

/** A growable little-endian byte buffer, reused across rows. */
final class Buffer {
  private byte[] bytes;
  private int size;

  Buffer(int capacity) {
    bytes = new byte[Math.max(capacity, 16)];
  }

  void clear() {
    size = 0;
  }

  int size() {
    return size;
  }

  byte[] array() {
    return bytes;
  }

  byte[] toByteArray() {
    return Arrays.copyOf(bytes, size);
  }

  private void reserve(int more) {
    if (size + more > bytes.length) {
      bytes = Arrays.copyOf(bytes, Math.max(bytes.length * 2, size + more));
    }
  }

  void put(byte value) {
    reserve(1);
    bytes[size++] = value;
  }

  void put(byte[] value, int offset, int length) {
    reserve(length);
    System.arraycopy(value, offset, bytes, size, length);
    size += length;
  }

  void putUtf8(UTF8String value) {
    int length = value.numBytes();
    reserve(length);
    value.writeToMemory(bytes, Platform.BYTE_ARRAY_OFFSET + size);
    size += length;
  }

  void putU32(int value) {
    reserve(4);
    bytes[size] = (byte) value;
    bytes[size + 1] = (byte) (value >>> 8);
    bytes[size + 2] = (byte) (value >>> 16);
    bytes[size + 3] = (byte) (value >>> 24);
    size += 4;
  }

  /**
   * A u32 length and the plain text of {@code unscaled * 10^-scale} without trailing fraction
   * zeros ({@code 150, 2} -> "1.5"; zero -> "0"), as {@link CanonicalEncoder#plainDecimal} writes
   * it, for an unscaled value of at most 18 digits.
   */
  void putPlainDecimal(long unscaled, int scale) {
    if (unscaled == 0) {
      putU32(1);
      put((byte) '0');
      return;
    }
    while (scale > 0 && unscaled % 10 == 0) {
      unscaled /= 10;
      scale--;
    }
    boolean negative = unscaled < 0;
    long magnitude = Math.abs(unscaled);
    int digits = 1;
    for (long rest = magnitude / 10; rest != 0; rest /= 10) {
      digits++;
    }
    int shown = Math.max(digits, scale + 1); // "0.05": leading zeros before the point
    int length = (negative ? 1 : 0) + shown + (scale > 0 ? 1 : 0);
    putU32(length);
    reserve(length);
    int end = size + length;
    int at = end - 1;
    for (int k = 0; k < shown; k++) {
      if (scale > 0 && k == scale) {
        bytes[at--] = '.';
      }
      bytes[at--] = (byte) ('0' + magnitude % 10);
      magnitude /= 10;
    }
    if (negative) {
      bytes[at] = '-';
    }
    size = end;
  }

  /** A one-byte tag and a little-endian int64. */
  void putTagged(char tag, long value) {
    reserve(9);
    bytes[size] = (byte) tag;
    for (int k = 0; k < 8; k++) {
      bytes[size + 1 + k] = (byte) (value >>> (8 * k));
    }
    size += 9;
  }
}
