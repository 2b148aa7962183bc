package io.lakeshard.hash;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import net.openhft.hashing.LongTupleHashFunction;

import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.expressions.CreateNamedStruct;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.codegen.Block;
import org.apache.spark.sql.catalyst.expressions.codegen.CodeBlock;
import org.apache.spark.sql.catalyst.expressions.codegen.CodegenContext;
import org.apache.spark.sql.catalyst.expressions.codegen.ExprCode;
import org.apache.spark.sql.catalyst.expressions.codegen.FalseLiteral$;
import org.apache.spark.sql.types.BooleanType;
import org.apache.spark.sql.types.ByteType;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.DateType;
import org.apache.spark.sql.types.DoubleType;
import org.apache.spark.sql.types.FloatType;
import org.apache.spark.sql.types.IntegerType;
import org.apache.spark.sql.types.LongType;
import org.apache.spark.sql.types.ShortType;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.sql.types.TimestampNTZType;
import org.apache.spark.sql.types.TimestampType;
import scala.Tuple2;
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
  // For eval and for a struct column's generated code (both call hash(record)): one per thread.
  private transient ThreadLocal<RowHasher> hashers;

  public ContentHash(Expression child) {
    this.child = child;
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
    if (hashers == null) {
      hashers = ThreadLocal.withInitial(this::newHasher);
    }
    return hashers.get().hash(record);
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

  /**
   * Generated code calls {@link #hash} on this object: the expression takes part in whole-stage
   * code generation (a {@code CodegenFallback} would keep its whole projection out of it).
   *
   * <p>When the record is built in the same expression ({@code struct(a, b, …)}, as ingest
   * does), its fields go into one {@link RowHasher#row} that the generated code keeps, each set
   * with its own typed setter: Spark's own code for the struct boxes every value into a new
   * {@code Object[]} and row per record.
   */
  @Override
  public ExprCode doGenCode(CodegenContext ctx, ExprCode ev) {
    String self = ctx.addReferenceObj("lakeshardContentHash", this, ContentHash.class.getName());
    if (child instanceof CreateNamedStruct) {
      return genFields(ctx, ev, self, (CreateNamedStruct) child);
    }
    ExprCode record = child.genCode(ctx);
    String line =
        String.format(
            "%nbyte[] %s = %s.hash(%s ? null : (org.apache.spark.sql.catalyst.InternalRow) %s);",
            ev.value(), self, record.isNull(), record.value());
    Block code = record.code().$plus(new CodeBlock(seq(line), seq()));
    return ev.copy(code, FalseLiteral$.MODULE$, ev.value());
  }

  /** A hasher for one instance of generated code (one task's projection). */
  public RowHasher newHasher() {
    return new RowHasher((StructType) child.dataType());
  }

  private ExprCode genFields(CodegenContext ctx, ExprCode ev, String self, CreateNamedStruct s) {
    String hasher =
        ctx.addMutableState(
            RowHasher.class.getName(),
            "lakeshardHasher",
            v -> String.format("%s = %s.newHasher();", v, self),
            true,
            true);
    Seq<Expression> values = s.valExprs();
    List<String> fields = new ArrayList<>();
    for (int i = 0; i < values.size(); i++) {
      Expression value = values.apply(i);
      ExprCode field = value.genCode(ctx);
      fields.add(
          field.code().toString()
              + String.format(
                  "%nif (%s) { %s.row.setNullAt(%d); } else { %s; }",
                  field.isNull(),
                  hasher,
                  i,
                  setter(hasher + ".row", value.dataType(), i, field.value().toString())));
    }
    // As Spark does for a struct: outside whole-stage code generation (a stage of over 100
    // fields), a wide record's fields are set in several methods, each small enough for the JIT.
    String set =
        ctx.splitExpressionsWithCurrentInputs(
            CollectionConverters.asScala(fields).toList(),
            "lakeshardSetFields",
            CollectionConverters.asScala(new ArrayList<Tuple2<String, String>>()).toList(),
            "void",
            body -> body,
            calls -> calls.mkString("", ";\n", ";"));
    String code = String.format("%n%s%nbyte[] %s = %s.hash();", set, ev.value(), hasher);
    Block block = new CodeBlock(seq(code), seq());
    return ev.copy(block, FalseLiteral$.MODULE$, ev.value());
  }

  /** The setter of a {@code SpecificInternalRow} for a value of {@code type}: no boxing. */
  private static String setter(String row, DataType type, int ordinal, String value) {
    String kind = null;
    if (type instanceof BooleanType) {
      kind = "Boolean";
    } else if (type instanceof ByteType) {
      kind = "Byte";
    } else if (type instanceof ShortType) {
      kind = "Short";
    } else if (type instanceof IntegerType || type instanceof DateType) {
      kind = "Int";
    } else if (type instanceof LongType
        || type instanceof TimestampType
        || type instanceof TimestampNTZType) {
      kind = "Long";
    } else if (type instanceof FloatType) {
      kind = "Float";
    } else if (type instanceof DoubleType) {
      kind = "Double";
    }
    if (kind == null) {
      // Hashed before the next record is read: a value pointing into a reused buffer is fine.
      return String.format("%s.update(%d, %s)", row, ordinal, value);
    }
    return String.format("%s.set%s(%d, %s)", row, kind, ordinal, value);
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
