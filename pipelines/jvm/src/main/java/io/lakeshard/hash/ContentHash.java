package io.lakeshard.hash;

import java.util.Arrays;

import net.openhft.hashing.LongTupleHashFunction;

import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.codegen.Block;
import org.apache.spark.sql.catalyst.expressions.codegen.CodeBlock;
import org.apache.spark.sql.catalyst.expressions.codegen.CodegenContext;
import org.apache.spark.sql.catalyst.expressions.codegen.ExprCode;
import org.apache.spark.sql.catalyst.expressions.codegen.FalseLiteral$;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import scala.collection.immutable.IndexedSeq;
import scala.collection.immutable.Seq;
import scala.jdk.javaapi.CollectionConverters;

/**
 * {@code lakeshard_content_hash(struct)}: the 16-byte XXH3-128 (seed 0, big-endian as xxhash's
 * {@code digest()}) of the struct's canonical encoding; never null. It reads Spark's internal rows
 * directly: no conversion to Java objects and no Python worker.
 */
public final class ContentHash extends Expression implements java.io.Serializable {
  private static final long serialVersionUID = 1L;
  private static final LongTupleHashFunction XXH3_128 = LongTupleHashFunction.xx128();

  private final Expression child;
  private transient ThreadLocal<State> state;

  public ContentHash(Expression child) {
    this.child = child;
  }

  /** What one thread reuses from row to row. */
  private static final class State {
    final CanonicalEncoder encoder;
    final Buffer buffer = new Buffer(256);
    final long[] digest = new long[2];

    State(StructType schema) {
      encoder = new CanonicalEncoder(schema);
    }
  }

  public Expression child() {
    return child;
  }

  @Override
  public Seq<Expression> children() {
    return seq(child);
  }

  @Override
  public DataType dataType() {
    return DataTypes.BinaryType;
  }

  @Override
  public boolean nullable() {
    return false;
  }

  @Override
  public String prettyName() {
    return "lakeshard_content_hash";
  }

  @Override
  public Object eval(InternalRow input) {
    return hash((InternalRow) child.eval(input));
  }

  /** The content hash of one record (null: a record without fields). */
  public byte[] hash(InternalRow record) {
    State s = state();
    s.encoder.encode(record, s.buffer);
    return digest(s.buffer.array(), s.buffer.size(), s.digest);
  }

  /** xxhash's canonical digest: the high 64 bits then the low, each big-endian. */
  static byte[] digest(byte[] bytes, int length, long[] scratch) {
    XXH3_128.hashBytes(bytes, 0, length, scratch);
    byte[] out = new byte[16];
    long high = scratch[1];
    long low = scratch[0];
    for (int k = 0; k < 8; k++) {
      out[k] = (byte) (high >>> (56 - 8 * k));
      out[8 + k] = (byte) (low >>> (56 - 8 * k));
    }
    return out;
  }

  private State state() {
    if (state == null) {
      StructType schema = (StructType) child.dataType();
      state = ThreadLocal.withInitial(() -> new State(schema));
    }
    return state.get();
  }

  /**
   * Generated code calls {@link #hash} on this object: the expression takes part in whole-stage
   * code generation (a {@code CodegenFallback} would keep its whole projection out of it).
   */
  @Override
  public ExprCode doGenCode(CodegenContext ctx, ExprCode ev) {
    String self = ctx.addReferenceObj("lakeshardContentHash", this, ContentHash.class.getName());
    ExprCode record = child.genCode(ctx);
    String line =
        String.format(
            "%nbyte[] %s = %s.hash(%s ? null : (org.apache.spark.sql.catalyst.InternalRow) %s);",
            ev.value(), self, record.isNull(), record.value());
    Block code = record.code().$plus(new CodeBlock(seq(line), seq()));
    return ev.copy(code, FalseLiteral$.MODULE$, ev.value());
  }

  @SafeVarargs
  private static <T> Seq<T> seq(final T... items) {
    return CollectionConverters.asScala(Arrays.asList(items)).toList();
  }

  @Override
  public Expression withNewChildrenInternal(IndexedSeq<Expression> children) {
    return new ContentHash(children.head());
  }

  @Override
  public int productArity() {
    return 1;
  }

  @Override
  public Object productElement(int n) {
    if (n != 0) {
      throw new IndexOutOfBoundsException(String.valueOf(n));
    }
    return child;
  }

  @Override
  public boolean canEqual(Object other) {
    return other instanceof ContentHash;
  }

  @Override
  public boolean equals(Object other) {
    return other instanceof ContentHash && ((ContentHash) other).child.equals(child);
  }

  @Override
  public int hashCode() {
    return 31 * ContentHash.class.hashCode() + child.hashCode();
  }
}
