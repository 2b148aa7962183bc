package io.lakeshard.hash;

import org.apache.spark.sql.SparkSessionExtensions;
import org.apache.spark.sql.catalyst.FunctionIdentifier;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.ExpressionInfo;
import scala.Function1;
import scala.Tuple3;
import scala.collection.immutable.Seq;
import scala.runtime.AbstractFunction1;
import scala.runtime.BoxedUnit;

/**
 * {@code spark.sql.extensions=io.lakeshard.hash.LakeshardExtensions}: registers
 * {@code lakeshard_content_hash(struct)} in every session.
 */
public final class LakeshardExtensions extends AbstractFunction1<SparkSessionExtensions, BoxedUnit> {
  public static final String NAME = "lakeshard_content_hash";

  @Override
  public BoxedUnit apply(SparkSessionExtensions extensions) {
    ExpressionInfo info =
        new ExpressionInfo(
            ContentHash.class.getName(),
            null,
            NAME,
            "_FUNC_(struct) - the 16-byte lakeshard content hash of a record",
            "",
            "",
            "",
            "misc_funcs",
            "",
            "",
            "");
    Function1<Seq<Expression>, Expression> builder =
        new AbstractFunction1<Seq<Expression>, Expression>() {
          @Override
          public Expression apply(Seq<Expression> arguments) {
            if (arguments.size() != 1) {
              throw new IllegalArgumentException(
                  NAME + " takes one struct argument, got " + arguments.size());
            }
            return new ContentHash(arguments.head());
          }
        };
    extensions.injectFunction(new Tuple3<>(FunctionIdentifier.apply(NAME), info, builder));
    return BoxedUnit.UNIT;
  }
}
