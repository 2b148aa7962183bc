package io.lakeshard.metrics;

import java.util.LinkedHashMap;
import java.util.Map;
import org.apache.spark.SparkContext;
import org.apache.spark.executor.TaskMetrics;
import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerJobEnd;
import org.apache.spark.scheduler.SparkListenerTaskEnd;

/**
 * Spark's own task metrics, summed over every task the driver sees end: a run reads the totals
 * before and after its work and records the difference (executor CPU and GC time, peak execution
 * memory, bytes spilled, shuffle and input bytes). One listener per SparkContext, added on first
 * use by {@link #install}.
 */
public final class TaskTotals extends SparkListener {
  private static final Map<SparkContext, TaskTotals> INSTALLED = new java.util.WeakHashMap<>();

  private long tasks;
  private long failedTasks;
  private long jobs;
  private long executorRunTimeMs;
  private long executorCpuTimeNs;
  private long jvmGcTimeMs;
  private long peakExecutionMemory; // the largest of any one task
  private long memoryBytesSpilled;
  private long diskBytesSpilled;
  private long shuffleReadBytes;
  private long shuffleWriteBytes;
  private long inputBytes;
  private long inputRecords;
  private long outputBytes;

  /** The listener of this context, added the first time it is asked for. */
  public static synchronized TaskTotals install(SparkContext context) {
    return INSTALLED.computeIfAbsent(
        context,
        c -> {
          TaskTotals totals = new TaskTotals();
          c.addSparkListener(totals);
          return totals;
        });
  }

  @Override
  public synchronized void onTaskEnd(SparkListenerTaskEnd end) {
    tasks++;
    if (!end.taskInfo().successful()) {
      failedTasks++;
    }
    TaskMetrics m = end.taskMetrics();
    if (m == null) {
      return; // a task that failed before reporting metrics
    }
    executorRunTimeMs += m.executorRunTime();
    executorCpuTimeNs += m.executorCpuTime();
    jvmGcTimeMs += m.jvmGCTime();
    peakExecutionMemory = Math.max(peakExecutionMemory, m.peakExecutionMemory());
    memoryBytesSpilled += m.memoryBytesSpilled();
    diskBytesSpilled += m.diskBytesSpilled();
    shuffleReadBytes += m.shuffleReadMetrics().totalBytesRead();
    shuffleWriteBytes += m.shuffleWriteMetrics().bytesWritten();
    inputBytes += m.inputMetrics().bytesRead();
    inputRecords += m.inputMetrics().recordsRead();
    outputBytes += m.outputMetrics().bytesWritten();
  }

  @Override
  public synchronized void onJobEnd(SparkListenerJobEnd end) {
    jobs++;
  }

  /** The totals so far, by name (counters only grow; the peak is the largest so far). */
  public synchronized Map<String, Long> totals() {
    Map<String, Long> out = new LinkedHashMap<>();
    out.put("tasks", tasks);
    out.put("failed_tasks", failedTasks);
    out.put("jobs", jobs);
    out.put("executor_run_time_ms", executorRunTimeMs);
    out.put("executor_cpu_time_ns", executorCpuTimeNs);
    out.put("jvm_gc_time_ms", jvmGcTimeMs);
    out.put("peak_execution_memory_bytes", peakExecutionMemory);
    out.put("memory_bytes_spilled", memoryBytesSpilled);
    out.put("disk_bytes_spilled", diskBytesSpilled);
    out.put("shuffle_read_bytes", shuffleReadBytes);
    out.put("shuffle_write_bytes", shuffleWriteBytes);
    out.put("input_bytes", inputBytes);
    out.put("input_records", inputRecords);
    out.put("output_bytes", outputBytes);
    return out;
  }

  /** Start a new peak: the largest task memory from now on. */
  public synchronized void resetPeak() {
    peakExecutionMemory = 0;
  }
}
