package streamfabric;

import java.net.URI;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import software.amazon.awssdk.auth.credentials.AwsBasicCredentials;
import software.amazon.awssdk.auth.credentials.StaticCredentialsProvider;
import software.amazon.awssdk.core.SdkBytes;
import software.amazon.awssdk.http.Protocol;
import software.amazon.awssdk.http.nio.netty.NettyNioAsyncHttpClient;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.services.kinesis.KinesisAsyncClient;
import software.amazon.awssdk.services.kinesis.KinesisClient;
import software.amazon.awssdk.services.kinesis.model.ConsumerStatus;
import software.amazon.awssdk.services.kinesis.model.ResourceInUseException;
import software.amazon.awssdk.services.kinesis.model.ShardIteratorType;
import software.amazon.awssdk.services.kinesis.model.StreamStatus;
import software.amazon.awssdk.services.kinesis.model.SubscribeToShardEvent;
import software.amazon.awssdk.services.kinesis.model.SubscribeToShardRequest;
import software.amazon.awssdk.services.kinesis.model.SubscribeToShardResponseHandler;

/**
 * Enhanced fan-out through the AWS SDK for Java v2, as the KCL uses it: the sync client
 * (CBOR, the SDK's default) creates a stream and registers a consumer; the async Netty
 * client subscribes over HTTP/2 cleartext and over HTTP/1.1 and must receive each record put
 * afterwards, in order; a second subscription within 5 s gets ResourceInUseException. Prints
 * each check and a last line "N passed, M failed".
 *
 * <pre>java -cp ... streamfabric.SubscribeCheck http://127.0.0.1:4567</pre>
 */
public final class SubscribeCheck {
    private static final Duration WAIT = Duration.ofSeconds(30);
    private static int passed;
    private static final List<String> failed = new ArrayList<>();

    /** A subscription's events as they arrive, and how it ended. */
    private static final class Subscription {
        final LinkedBlockingQueue<SubscribeToShardEvent> events = new LinkedBlockingQueue<>();
        final CompletableFuture<Void> done;

        Subscription(KinesisAsyncClient client, String consumerArn, String shardId) {
            SubscribeToShardResponseHandler handler = SubscribeToShardResponseHandler.builder()
                    .subscriber(event -> {
                        if (event instanceof SubscribeToShardEvent e) {
                            events.add(e);
                        }
                    })
                    .build();
            SubscribeToShardRequest request = SubscribeToShardRequest.builder()
                    .consumerARN(consumerArn)
                    .shardId(shardId)
                    .startingPosition(p -> p.type(ShardIteratorType.LATEST))
                    .build();
            done = client.subscribeToShard(request, handler);
        }

        SubscribeToShardEvent next() throws Exception {
            SubscribeToShardEvent event = events.poll(WAIT.toSeconds(), TimeUnit.SECONDS);
            if (event == null) {
                throw new AssertionError("no event within " + WAIT + (done.isDone() ? "; the stream ended" : ""));
            }
            return event;
        }
    }

    interface Check {
        void run() throws Exception;
    }

    private static void check(String name, Check body) {
        long started = System.nanoTime();
        try {
            body.run();
            passed++;
            System.out.printf("ok    %s (%.2fs)%n", name, (System.nanoTime() - started) / 1e9);
        } catch (Throwable t) {
            failed.add(name);
            System.out.printf("FAIL  %s: %s%n", name, t);
        }
    }

    private static void expect(boolean condition, String message) {
        if (!condition) {
            throw new AssertionError(message);
        }
    }

    private static KinesisAsyncClient asyncClient(URI endpoint, Protocol protocol) {
        return KinesisAsyncClient.builder()
                .endpointOverride(endpoint)
                .region(Region.US_EAST_1)
                .credentialsProvider(StaticCredentialsProvider.create(AwsBasicCredentials.create("test", "test")))
                .httpClientBuilder(NettyNioAsyncHttpClient.builder().protocol(protocol))
                .build();
    }

    /** Put `count` records one at a time, each read from the subscription before the next. */
    private static List<Long> pushLatencies(KinesisClient sync, String stream, Subscription sub, int count, String tag)
            throws Exception {
        sub.next(); // the first event: the subscription is in place
        List<Long> micros = new ArrayList<>();
        for (int i = 0; i < count; i++) {
            String data = tag + "-" + i;
            long sent = System.nanoTime();
            sync.putRecord(r -> r.streamName(stream).partitionKey("k").explicitHashKey("0")
                    .data(SdkBytes.fromUtf8String(data)));
            String got = null;
            while (got == null) {
                SubscribeToShardEvent event = sub.next();
                expect(event.continuationSequenceNumber() != null, "every event has a continuation");
                if (!event.records().isEmpty()) {
                    expect(event.records().size() == 1, "one record at a time: " + event.records());
                    got = event.records().get(0).data().asUtf8String();
                }
            }
            expect(got.equals(data), "pushed in order: got " + got + ", expected " + data);
            micros.add((System.nanoTime() - sent) / 1000);
        }
        Collections.sort(micros);
        return micros;
    }

    private static String figures(List<Long> micros) {
        return String.format("p50 %.1f ms, p99 %.1f ms, max %.1f ms",
                micros.get(micros.size() / 2) / 1000.0,
                micros.get((int) Math.round((micros.size() - 1) * 0.99)) / 1000.0,
                micros.get(micros.size() - 1) / 1000.0);
    }

    public static void main(String[] args) throws Exception {
        URI endpoint = URI.create(args[0]);
        String stream = "java-efo-" + System.currentTimeMillis();
        KinesisClient sync = KinesisClient.builder()
                .endpointOverride(endpoint)
                .region(Region.US_EAST_1)
                .credentialsProvider(StaticCredentialsProvider.create(AwsBasicCredentials.create("test", "test")))
                .build();
        Map<String, String> state = new ConcurrentHashMap<>();

        check("sync-cbor-create-stream-and-register-consumer", () -> {
            sync.createStream(r -> r.streamName(stream).shardCount(1));
            long deadline = System.nanoTime() + WAIT.toNanos();
            while (sync.describeStreamSummary(r -> r.streamName(stream)).streamDescriptionSummary().streamStatus()
                    != StreamStatus.ACTIVE) {
                expect(System.nanoTime() < deadline, "the stream never turned ACTIVE");
                Thread.sleep(50);
            }
            String streamArn = sync.describeStreamSummary(r -> r.streamName(stream)).streamDescriptionSummary().streamARN();
            String arn = sync.registerStreamConsumer(r -> r.streamARN(streamArn).consumerName("java")).consumer().consumerARN();
            while (sync.describeStreamConsumer(r -> r.consumerARN(arn)).consumerDescription().consumerStatus()
                    != ConsumerStatus.ACTIVE) {
                expect(System.nanoTime() < deadline, "the consumer never turned ACTIVE");
                Thread.sleep(50);
            }
            state.put("consumer", arn);
        });
        String consumer = state.get("consumer");
        if (consumer == null) {
            System.out.printf("%d passed, %d failed%n", passed, failed.size() + 1);
            System.exit(1);
        }
        String shard = "shardId-000000000000";

        try (KinesisAsyncClient h2 = asyncClient(endpoint, Protocol.HTTP2)) {
            check("async-http2-subscribe-to-shard-live-records", () -> {
                Subscription sub = new Subscription(h2, consumer, shard);
                List<Long> micros = pushLatencies(sync, stream, sub, 100, "h2");
                String over = endpoint.getScheme().equals("https") ? "over TLS" : "cleartext";
                System.out.println("      Java SDK v2, Netty HTTP/2 " + over + ": put-to-event latency over 100 records: "
                        + figures(micros));
                state.put("h2-started", "yes");
                check("async-http2-second-subscription-within-5s-resource-in-use", () -> {
                    Subscription second = new Subscription(h2, consumer, shard);
                    try {
                        second.done.get(WAIT.toSeconds(), TimeUnit.SECONDS);
                        throw new AssertionError("the second subscription was accepted");
                    } catch (java.util.concurrent.ExecutionException e) {
                        Throwable cause = e.getCause();
                        while (cause != null && !(cause instanceof ResourceInUseException)) {
                            cause = cause.getCause();
                        }
                        expect(cause != null, "expected ResourceInUseException, got " + e.getCause());
                    }
                });
                sub.done.cancel(true);
            });
        }
        // After the 5 s takeover window, a new client takes the subscription over.
        Thread.sleep(5_500);
        try (KinesisAsyncClient h1 = asyncClient(endpoint, Protocol.HTTP1_1)) {
            check("async-http1-subscribe-to-shard-live-records", () -> {
                Subscription sub = new Subscription(h1, consumer, shard);
                List<Long> micros = pushLatencies(sync, stream, sub, 20, "h1");
                System.out.println("      Java SDK v2, Netty HTTP/1.1: put-to-event latency over 20 records: "
                        + figures(micros));
                sub.done.cancel(true);
            });
        }
        sync.deleteStream(r -> r.streamName(stream).enforceConsumerDeletion(true));
        sync.close();
        if (!failed.isEmpty()) {
            System.out.println("failed: " + String.join(", ", failed));
        }
        System.out.printf("%d passed, %d failed%n", passed, failed.size());
        System.exit(failed.isEmpty() ? 0 : 1);
    }
}
