package io.lakeshard.hash;

import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.Comparator;

import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.expressions.SpecializedGetters;
import org.apache.spark.sql.catalyst.util.ArrayData;
import org.apache.spark.sql.catalyst.util.MapData;
import org.apache.spark.sql.types.ArrayType;
import org.apache.spark.sql.types.BinaryType;
import org.apache.spark.sql.types.BooleanType;
import org.apache.spark.sql.types.ByteType;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DateType;
import org.apache.spark.sql.types.Decimal;
import org.apache.spark.sql.types.DecimalType;
import org.apache.spark.sql.types.DoubleType;
import org.apache.spark.sql.types.FloatType;
import org.apache.spark.sql.types.IntegerType;
import org.apache.spark.sql.types.LongType;
import org.apache.spark.sql.types.MapType;
import org.apache.spark.sql.types.ShortType;
import org.apache.spark.sql.types.StringType;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.sql.types.TimestampNTZType;
import org.apache.spark.sql.types.TimestampType;
import org.apache.spark.unsafe.types.UTF8String;

/**
 * The canonical encoding of a record (version 1), as specified in README.md, "The content hash",
 * and implemented for Arrow in {@code pipelines/ingest/hashing.py}. One writer per type, chosen
 * once from the Spark type, so that encoding a row does no type dispatch on strings or classes.
 *
 * <p>A record (and a struct) is {@code (} + u32 count of non-null fields + each non-null field in
 * the order of its name's UTF-8 bytes: the name as a string, then the value. All integers are
 * little-endian.
 */
final class CanonicalEncoder {
  /** Writes the value at {@code ordinal} of {@code source}, which is not null there. */
  interface Writer {
    void write(SpecializedGetters source, int ordinal, Buffer out);
  }

  private final StructWriter record;

  CanonicalEncoder(StructType schema) {
    this.record = struct(schema);
  }

  /** Encode one record into {@code out} (cleared first); a null record has no fields. */
  void encode(InternalRow row, Buffer out) {
    out.clear();
    if (row == null) {
      out.put((byte) '(');
      out.putU32(0);
    } else {
      record.writeStruct(row, out);
    }
  }

  static Writer writerFor(DataType type) {
    if (type instanceof StringType) {
      return (s, i, out) -> {
        UTF8String value = s.getUTF8String(i);
        out.put((byte) 'S');
        out.putU32(value.numBytes());
        out.putUtf8(value);
      };
    }
    if (type instanceof BinaryType) {
      return (s, i, out) -> {
        byte[] value = s.getBinary(i);
        out.put((byte) 'B');
        out.putU32(value.length);
        out.put(value, 0, value.length);
      };
    }
    if (type instanceof BooleanType) {
      return (s, i, out) -> {
        out.put((byte) '?');
        out.put((byte) (s.getBoolean(i) ? 1 : 0));
      };
    }
    if (type instanceof ByteType) {
      return (s, i, out) -> out.putTagged('I', s.getByte(i));
    }
    if (type instanceof ShortType) {
      return (s, i, out) -> out.putTagged('I', s.getShort(i));
    }
    if (type instanceof IntegerType) {
      return (s, i, out) -> out.putTagged('I', s.getInt(i));
    }
    if (type instanceof LongType) {
      return (s, i, out) -> out.putTagged('I', s.getLong(i));
    }
    if (type instanceof FloatType) {
      return (s, i, out) -> out.putTagged('F', canonicalBits(s.getFloat(i)));
    }
    if (type instanceof DoubleType) {
      return (s, i, out) -> out.putTagged('F', canonicalBits(s.getDouble(i)));
    }
    if (type instanceof DecimalType) {
      DecimalType decimal = (DecimalType) type;
      int precision = decimal.precision();
      int scale = decimal.scale();
      if (precision <= Decimal.MAX_LONG_DIGITS()) {
        // The unscaled value fits a long: format it without BigDecimal (no allocation).
        return (s, i, out) -> {
          out.put((byte) 'N');
          out.putPlainDecimal(s.getDecimal(i, precision, scale).toUnscaledLong(), scale);
        };
      }
      return (s, i, out) -> {
        byte[] text = plainDecimal(s.getDecimal(i, precision, scale).toJavaBigDecimal());
        out.put((byte) 'N');
        out.putU32(text.length);
        out.put(text, 0, text.length);
      };
    }
    if (type instanceof DateType) {
      return (s, i, out) -> out.putTagged('D', s.getInt(i));
    }
    if (type instanceof TimestampType) {
      return (s, i, out) -> out.putTagged('T', s.getLong(i));
    }
    if (type instanceof TimestampNTZType) {
      return (s, i, out) -> out.putTagged('L', s.getLong(i));
    }
    if (type instanceof ArrayType) {
      Writer element = writerFor(((ArrayType) type).elementType());
      return (s, i, out) -> {
        ArrayData values = s.getArray(i);
        int n = values.numElements();
        out.put((byte) '[');
        out.putU32(n);
        for (int k = 0; k < n; k++) {
          if (values.isNullAt(k)) {
            out.put((byte) 0);
          } else {
            element.write(values, k, out);
          }
        }
      };
    }
    if (type instanceof MapType) {
      MapType map = (MapType) type;
      return new MapWriter(writerFor(map.keyType()), writerFor(map.valueType()));
    }
    if (type instanceof StructType) {
      return struct((StructType) type);
    }
    throw new IllegalArgumentException("no canonical encoding for " + type.simpleString());
  }

  private static StructWriter struct(StructType schema) {
    StructField[] fields = schema.fields();
    Integer[] order = new Integer[fields.length];
    byte[][] names = new byte[fields.length][];
    for (int k = 0; k < fields.length; k++) {
      order[k] = k;
      names[k] = fields[k].name().getBytes(StandardCharsets.UTF_8);
    }
    Arrays.sort(order, (a, b) -> Arrays.compareUnsigned(names[a], names[b]));
    int[] ordinals = new int[fields.length];
    byte[][] pieces = new byte[fields.length][];
    Writer[] writers = new Writer[fields.length];
    for (int k = 0; k < fields.length; k++) {
      int ordinal = order[k];
      ordinals[k] = ordinal;
      byte[] name = names[ordinal];
      Buffer piece = new Buffer(5 + name.length);
      piece.put((byte) 'S');
      piece.putU32(name.length);
      piece.put(name, 0, name.length);
      pieces[k] = piece.toByteArray();
      writers[k] = writerFor(fields[ordinal].dataType());
    }
    return new StructWriter(ordinals, pieces, writers);
  }

  static long canonicalBits(double value) {
    if (value == 0.0) {
      return 0L; // -0.0 -> 0.0
    }
    if (Double.isNaN(value)) {
      return 0x7FF8000000000000L; // one NaN bit pattern
    }
    return Double.doubleToRawLongBits(value);
  }

  /** The plain notation without trailing fraction zeros: 1.50 -> "1.5", -0.00 -> "0". */
  static byte[] plainDecimal(BigDecimal value) {
    if (value.signum() == 0) {
      return new byte[] {'0'};
    }
    return value.stripTrailingZeros().toPlainString().getBytes(StandardCharsets.US_ASCII);
  }

  static final class StructWriter implements Writer {
    private final int[] ordinals;
    private final byte[][] pieces;
    private final Writer[] writers;

    StructWriter(int[] ordinals, byte[][] pieces, Writer[] writers) {
      this.ordinals = ordinals;
      this.pieces = pieces;
      this.writers = writers;
    }

    @Override
    public void write(SpecializedGetters source, int ordinal, Buffer out) {
      writeStruct(source.getStruct(ordinal, ordinals.length), out);
    }

    void writeStruct(InternalRow row, Buffer out) {
      int present = 0;
      for (int ordinal : ordinals) {
        if (!row.isNullAt(ordinal)) {
          present++;
        }
      }
      out.put((byte) '(');
      out.putU32(present);
      for (int k = 0; k < ordinals.length; k++) {
        if (!row.isNullAt(ordinals[k])) {
          out.put(pieces[k], 0, pieces[k].length);
          writers[k].write(row, ordinals[k], out);
        }
      }
    }
  }

  /** Entries sorted by their key's encoding (a stable sort: equal keys keep their order). */
  static final class MapWriter implements Writer {
    private final Writer key;
    private final Writer value;

    MapWriter(Writer key, Writer value) {
      this.key = key;
      this.value = value;
    }

    @Override
    public void write(SpecializedGetters source, int ordinal, Buffer out) {
      MapData map = source.getMap(ordinal);
      ArrayData keys = map.keyArray();
      ArrayData values = map.valueArray();
      int n = map.numElements();
      byte[][] encodedKeys = new byte[n][];
      byte[][] entries = new byte[n][];
      Buffer scratch = new Buffer(64);
      for (int k = 0; k < n; k++) {
        scratch.clear();
        key.write(keys, k, scratch);
        encodedKeys[k] = scratch.toByteArray();
        if (values.isNullAt(k)) {
          scratch.put((byte) 0);
        } else {
          value.write(values, k, scratch);
        }
        entries[k] = scratch.toByteArray();
      }
      Integer[] order = new Integer[n];
      for (int k = 0; k < n; k++) {
        order[k] = k;
      }
      Arrays.sort(order, Comparator.comparing((Integer k) -> encodedKeys[k], Arrays::compareUnsigned));
      out.put((byte) '{');
      out.putU32(n);
      for (int k : order) {
        out.put(entries[k], 0, entries[k].length);
      }
    }
  }
}
