package streamfabric;

import java.io.FileWriter;
import java.io.IOException;
import java.io.PrintWriter;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.TimeUnit;
import software.amazon.awssdk.auth.credentials.AwsBasicCredentials;
import software.amazon.awssdk.auth.credentials.StaticCredentialsProvider;
import software.amazon.awssdk.http.Protocol;
import software.amazon.awssdk.http.nio.netty.NettyNioAsyncHttpClient;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.services.cloudwatch.CloudWatchAsyncClient;
import software.amazon.awssdk.services.dynamodb.DynamoDbAsyncClient;
import software.amazon.awssdk.services.kinesis.KinesisAsyncClient;
import software.amazon.kinesis.common.ConfigsBuilder;
import software.amazon.kinesis.common.InitialPositionInStream;
import software.amazon.kinesis.common.InitialPositionInStreamExtended;
import software.amazon.kinesis.coordinator.Scheduler;
import software.amazon.kinesis.lifecycle.events.InitializationInput;
import software.amazon.kinesis.lifecycle.events.LeaseLostInput;
import software.amazon.kinesis.lifecycle.events.ProcessRecordsInput;
import software.amazon.kinesis.lifecycle.events.ShardEndedInput;
import software.amazon.kinesis.lifecycle.events.ShutdownRequestedInput;
import software.amazon.kinesis.metrics.MetricsLevel;
import software.amazon.kinesis.metrics.NullMetricsFactory;
import software.amazon.kinesis.processor.ShardRecordProcessor;
import software.amazon.kinesis.retrieval.KinesisClientRecord;
import software.amazon.kinesis.retrieval.fanout.FanOutConfig;
import software.amazon.kinesis.retrieval.polling.PollingConfig;

/**
 * One worker of a KCL application, unmodified KCL 3.x or 2.x (built against each: e2e/java
 * and e2e/java/kcl2; it uses only what both have): Kinesis, DynamoDB (its leases) and
 * CloudWatch (never called: metrics off) all pointed at the broker. Every record processed is
 * written to the output file as {@code <millis> RECORD <shard> <sequence> <sub> <data>}, every
 * checkpoint as {@code <millis> CHECKPOINT <shard> <sequence> <sub>} (after each batch), a
 * shard's end as {@code SHARD-END}, so the scenario can check that each record was processed, in order per
 * shard, and processed twice only after the last checkpoint of its shard.
 *
 * <pre>java ... streamfabric.KclWorker ENDPOINT STREAM APPLICATION WORKER_ID fanout|polling OUTPUT</pre>
 */
public final class KclWorker {
    private static PrintWriter out;

    private static synchronized void write(String line) {
        out.println(System.currentTimeMillis() + " " + line);
        out.flush();
    }

    static final class Processor implements ShardRecordProcessor {
        private String shardId;

        @Override
        public void initialize(InitializationInput input) {
            shardId = input.shardId();
            write("INIT " + shardId + " " + input.extendedSequenceNumber());
        }

        @Override
        public void processRecords(ProcessRecordsInput input) {
            KinesisClientRecord last = null;
            for (KinesisClientRecord r : input.records()) {
                byte[] data = new byte[r.data().remaining()];
                r.data().get(data);
                write("RECORD " + shardId + " " + r.sequenceNumber() + " " + r.subSequenceNumber() + " "
                        + new String(data, StandardCharsets.UTF_8));
                last = r;
            }
            if (last != null) {
                try {
                    input.checkpointer().checkpoint();
                    write("CHECKPOINT " + shardId + " " + last.sequenceNumber() + " " + last.subSequenceNumber());
                } catch (Exception e) {
                    write("CHECKPOINT-FAILED " + shardId + " " + e);
                }
            }
        }

        @Override
        public void leaseLost(LeaseLostInput input) {
            write("LEASE-LOST " + shardId);
        }

        @Override
        public void shardEnded(ShardEndedInput input) {
            try {
                input.checkpointer().checkpoint();
                write("SHARD-END " + shardId);
            } catch (Exception e) {
                write("SHARD-END-FAILED " + shardId + " " + e);
            }
        }

        @Override
        public void shutdownRequested(ShutdownRequestedInput input) {
            try {
                input.checkpointer().checkpoint();
                write("SHUTDOWN " + shardId);
            } catch (Exception e) {
                write("SHUTDOWN-FAILED " + shardId + " " + e);
            }
        }
    }

    public static void main(String[] args) throws IOException, InterruptedException {
        URI endpoint = URI.create(args[0]);
        String stream = args[1];
        String application = args[2];
        String workerId = args[3];
        boolean fanOut = args[4].equals("fanout");
        out = new PrintWriter(new FileWriter(args[5], true));

        StaticCredentialsProvider credentials =
                StaticCredentialsProvider.create(AwsBasicCredentials.create("test", "test"));
        KinesisAsyncClient kinesis = KinesisAsyncClient.builder()
                .endpointOverride(endpoint).region(Region.US_EAST_1).credentialsProvider(credentials)
                .httpClientBuilder(NettyNioAsyncHttpClient.builder().protocol(Protocol.HTTP2).maxConcurrency(100))
                .build();
        DynamoDbAsyncClient dynamo = DynamoDbAsyncClient.builder()
                .endpointOverride(endpoint).region(Region.US_EAST_1).credentialsProvider(credentials).build();
        CloudWatchAsyncClient cloudWatch = CloudWatchAsyncClient.builder()
                .endpointOverride(endpoint).region(Region.US_EAST_1).credentialsProvider(credentials).build();

        ConfigsBuilder configs = new ConfigsBuilder(stream, application, kinesis, dynamo, cloudWatch, workerId,
                Processor::new);
        InitialPositionInStreamExtended trimHorizon =
                InitialPositionInStreamExtended.newInitialPosition(InitialPositionInStream.TRIM_HORIZON);
        Scheduler scheduler = new Scheduler(
                configs.checkpointConfig(),
                configs.coordinatorConfig(),
                configs.leaseManagementConfig().failoverTimeMillis(Long.getLong("failoverMillis", 10_000L)),
                configs.lifecycleConfig(),
                configs.metricsConfig().metricsLevel(MetricsLevel.NONE).metricsFactory(new NullMetricsFactory()),
                configs.processorConfig(),
                configs.retrievalConfig()
                        .initialPositionInStreamExtended(trimHorizon)
                        .retrievalSpecificConfig(fanOut
                                ? new FanOutConfig(kinesis).streamName(stream).applicationName(application)
                                : new PollingConfig(stream, kinesis).idleTimeBetweenReadsInMillis(200)));
        Thread worker = new Thread(scheduler, "kcl-scheduler");
        worker.start();
        write("STARTED " + workerId + " " + (fanOut ? "fanout" : "polling"));
        // SIGTERM: the KCL's graceful shutdown (checkpoints through shutdownRequested).
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                scheduler.startGracefulShutdown().get(20, TimeUnit.SECONDS);
                write("STOPPED " + workerId);
            } catch (Exception e) {
                write("STOP-FAILED " + workerId + " " + e);
            }
        }));
        worker.join();
    }
}
