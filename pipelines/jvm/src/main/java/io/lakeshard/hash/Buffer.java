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
