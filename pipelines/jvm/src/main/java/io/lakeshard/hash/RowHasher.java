package io.lakeshard.hash;

import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.expressions.SpecificInternalRow;
import org.apache.spark.sql.types.StructType;

/**
 * What one instance of generated code, or one thread of {@code eval}, reuses from record to
 * record: the encoder and its buffers, and the record's fields, set in {@link #row} by generated
 * code that builds the record itself. Not shared between threads.
 */
public final class RowHasher {
  /** The record being hashed; the generated code sets each field before {@link #hash}. */
  public final SpecificInternalRow row;

  private final CanonicalEncoder encoder;
  private final Buffer buffer = new Buffer(256);
  private final long[] digest = new long[2];

  RowHasher(StructType schema) {
    row = new SpecificInternalRow(schema);
    encoder = new CanonicalEncoder(schema);
  }

  /** The content hash of {@link #row} as it is now. */
  public byte[] hash() {
    return hash(row);
  }

  /** The content hash of {@code record} (null: a record without fields). */
  byte[] hash(InternalRow record) {
    encoder.encode(record, buffer);
    return ContentHash.digest(buffer.array(), buffer.size(), digest);
  }
}
