package switchboard;

import cn.iocoder.yudao.framework.common.util.json.databind.NumberSerializer;
import cn.iocoder.yudao.framework.websocket.core.sender.rabbitmq.RabbitMQWebSocketMessage;
import cn.iocoder.yudao.framework.websocket.core.sender.redis.RedisWebSocketMessage;
import com.fasterxml.jackson.annotation.JsonAutoDetect;
import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.annotation.PropertyAccessor;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.MapperFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.json.JsonMapper;
import com.fasterxml.jackson.databind.jsontype.impl.LaissezFaireSubTypeValidator;
import com.fasterxml.jackson.databind.module.SimpleModule;
import com.rabbitmq.client.AMQP;
import com.rabbitmq.client.Channel;
import com.rabbitmq.client.Connection;
import com.rabbitmq.client.ConnectionFactory;
import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TimeZone;
import org.dromara.common.sse.dto.SseMessageDto;
import org.dromara.common.websocket.dto.WebSocketMessageDto;

/**
 * Publishes what yudao's and RuoYi-Vue-Plus's WebSocket senders publish, serialized by Jackson
 * configured as those frameworks configure it, to a real Redis and RabbitMQ.
 *
 * <p>Reads one command per line on stdin, fields separated by tabs, and answers each with one
 * line: {@code <receivers or -><TAB><the published payload>}, or {@code error<TAB><why>}.
 *
 * <ul>
 *   <li>{@code yudao-redis PORT TENANT TARGET TYPE TEXT}: {@code RedisWebSocketMessageSender}
 *       via {@code RedisMQTemplate.send} on channel {@code RedisWebSocketMessage};
 *   <li>{@code yudao-rabbitmq URI EXCHANGE TENANT TARGET TYPE TEXT}:
 *       {@code RabbitMQWebSocketMessageSender} via {@code RabbitTemplate.convertAndSend} with
 *       yudao's {@code Jackson2JsonMessageConverter};
 *   <li>{@code ruoyi-ws PORT PREFIX IDS TEXT} and {@code ruoyi-sse PORT PREFIX IDS TEXT}:
 *       {@code WebSocketUtils.publishMessage} / {@code SseMessageUtils.publishMessage} through
 *       Redisson with RuoYi-Vue-Plus's codec ({@code IDS} comma-separated, or {@code -} for
 *       {@code publishAll});
 *   <li>{@code raw-rabbitmq URI EXCHANGE CONTENT_TYPE TEXT}: any bytes, for malformed messages.
 * </ul>
 *
 * <p>TENANT and PREFIX are {@code -} for none. TARGET is {@code session:ID},
 * {@code user:TYPE:ID} or {@code type:TYPE}, as the three {@code send} methods. The message
 * content is {@code sendObject}'s: a {@link Notice} written by {@code JsonUtils}.
 */
public final class IngestPublisher {

    /** The object services pass to {@code sendObject}; its long id is beyond JS's safe range. */
    public static final class Notice {
        private final Long id = 9007199254740993L;
        private final String text;

        Notice(String text) {
            this.text = text;
        }

        public Long getId() {
            return id;
        }

        public String getText() {
            return text;
        }
    }

    /**
     * yudao's {@code JsonUtils} at run time: {@code YudaoJacksonAutoConfiguration} hands it
     * Spring Boot's {@code ObjectMapper} (Jackson2ObjectMapperBuilder's defaults, yudao's
     * {@code spring.jackson} settings, its Long serializer). Nulls are written.
     */
    static ObjectMapper yudaoJsonUtils() {
        SimpleModule module = new SimpleModule("TimestampSupportModule");
        module.addSerializer(Long.class, NumberSerializer.INSTANCE);
        module.addSerializer(Long.TYPE, NumberSerializer.INSTANCE);
        return JsonMapper.builder()
                .disable(MapperFeature.DEFAULT_VIEW_INCLUSION)
                .disable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
                .disable(SerializationFeature.FAIL_ON_EMPTY_BEANS)
                .addModule(module)
                .build();
    }

    /** Spring AMQP's {@code new Jackson2JsonMessageConverter()}: a plain ObjectMapper. */
    static ObjectMapper springAmqpConverter() {
        ObjectMapper mapper = new ObjectMapper();
        mapper.configure(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES, false);
        return mapper;
    }

    /**
     * RuoYi-Vue-Plus's {@code RedisConfig}: an ObjectMapper with default typing, wrapped in
     * Redisson's {@code TypedJsonJacksonCodec(Object.class, om)}, which copies it and applies
     * {@code JsonJacksonCodec.init}. (RuoYi also registers a JavaTimeModule for LocalDateTime;
     * these DTOs hold no dates.)
     */
    static ObjectMapper ruoyiRedissonCodec() {
        ObjectMapper om = new ObjectMapper();
        om.setTimeZone(TimeZone.getDefault());
        om.setVisibility(PropertyAccessor.ALL, JsonAutoDetect.Visibility.ANY);
        om.activateDefaultTyping(LaissezFaireSubTypeValidator.instance, ObjectMapper.DefaultTyping.NON_FINAL);
        ObjectMapper codec = om.copy();
        codec.setSerializationInclusion(JsonInclude.Include.NON_NULL);
        codec.setVisibility(codec.getSerializationConfig().getDefaultVisibilityChecker()
                .withFieldVisibility(JsonAutoDetect.Visibility.ANY)
                .withGetterVisibility(JsonAutoDetect.Visibility.NONE)
                .withSetterVisibility(JsonAutoDetect.Visibility.NONE)
                .withCreatorVisibility(JsonAutoDetect.Visibility.NONE));
        codec.disable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES);
        codec.enable(JsonGenerator.Feature.WRITE_BIGDECIMAL_AS_PLAIN);
        codec.disable(SerializationFeature.FAIL_ON_EMPTY_BEANS);
        codec.enable(MapperFeature.SORT_PROPERTIES_ALPHABETICALLY);
        return codec;
    }

    private final ObjectMapper jsonUtils = yudaoJsonUtils();
    private final ObjectMapper amqpConverter = springAmqpConverter();
    private final ObjectMapper redisson = ruoyiRedissonCodec();
    private final Map<String, Connection> amqp = new HashMap<>();

    public static void main(String[] args) throws Exception {
        IngestPublisher publisher = new IngestPublisher();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            String answer;
            try {
                answer = publisher.run(line.split("\t", -1));
            } catch (Exception e) {
                answer = "error\t" + e;
            }
            System.out.println(answer.replace("\n", " "));
            System.out.flush();
        }
        for (Connection c : publisher.amqp.values()) {
            c.close();
        }
    }

    private String run(String[] f) throws Exception {
        switch (f[0]) {
            case "yudao-redis": {
                RedisWebSocketMessage m = target(new RedisWebSocketMessage(), f[3]);
                m.setMessageType(f[4]).setMessageContent(jsonUtils.writeValueAsString(new Notice(f[5])));
                // TenantRedisMessageInterceptor.sendMessageBefore
                if (!f[2].equals("-")) {
                    m.addHeader("tenant-id", Long.valueOf(f[2]).toString());
                }
                // RedisMQTemplate.send: StringRedisTemplate.convertAndSend(channel, JsonUtils.toJsonString(m))
                String payload = jsonUtils.writeValueAsString(m);
                return publishRedis(Integer.parseInt(f[1]), m.getChannel(), payload.getBytes(StandardCharsets.UTF_8)) + "\t" + payload;
            }
            case "yudao-rabbitmq": {
                RabbitMQWebSocketMessage m = target(new RabbitMQWebSocketMessage(), f[4]);
                m.setMessageType(f[5]).setMessageContent(jsonUtils.writeValueAsString(new Notice(f[6])));
                byte[] body = amqpConverter.writeValueAsBytes(m);
                Map<String, Object> headers = new LinkedHashMap<>();
                headers.put("__TypeId__", RabbitMQWebSocketMessage.class.getName());
                // TenantRabbitMQMessagePostProcessor: the tenant as a Long header.
                if (!f[3].equals("-")) {
                    headers.put("tenant-id", Long.valueOf(f[3]));
                }
                publishAmqp(f[1], f[2], "application/json", headers, body);
                return "-\t" + new String(body, StandardCharsets.UTF_8);
            }
            case "raw-rabbitmq": {
                byte[] body = f[4].getBytes(StandardCharsets.UTF_8);
                publishAmqp(f[1], f[2], f[3], new HashMap<>(), body);
                return "-\t" + f[4];
            }
            case "ruoyi-ws":
            case "ruoyi-sse": {
                Object dto;
                String topic;
                List<Long> ids = ids(f[3]);
                if (f[0].equals("ruoyi-ws")) {
                    WebSocketMessageDto ws = new WebSocketMessageDto();
                    ws.setSessionKeys(ids);
                    ws.setMessage(f[4]);
                    dto = ws;
                    topic = "global:websocket";
                } else {
                    SseMessageDto sse = new SseMessageDto();
                    sse.setUserIds(ids);
                    sse.setMessage(f[4]);
                    dto = sse;
                    topic = "global:sse";
                }
                // KeyPrefixHandler, Redisson's name mapper.
                String channel = f[2].equals("-") ? topic : f[2] + ":" + topic;
                byte[] payload = redisson.writeValueAsBytes(dto);
                return publishRedis(Integer.parseInt(f[1]), channel, payload) + "\t" + new String(payload, StandardCharsets.UTF_8);
            }
            default:
                throw new IllegalArgumentException("unknown command " + f[0]);
        }
    }

    /** What the three {@code send} overloads set: session id, user type and id, or type. */
    private static <T> T target(T message, String target) {
        String[] t = target.split(":");
        if (message instanceof RedisWebSocketMessage r) {
            switch (t[0]) {
                case "session" -> r.setSessionId(t[1]);
                case "user" -> r.setUserType(Integer.valueOf(t[1])).setUserId(Long.valueOf(t[2]));
                case "type" -> r.setUserType(Integer.valueOf(t[1]));
                default -> throw new IllegalArgumentException(target);
            }
        } else if (message instanceof RabbitMQWebSocketMessage r) {
            switch (t[0]) {
                case "session" -> r.setSessionId(t[1]);
                case "user" -> r.setUserType(Integer.valueOf(t[1])).setUserId(Long.valueOf(t[2]));
                case "type" -> r.setUserType(Integer.valueOf(t[1]));
                default -> throw new IllegalArgumentException(target);
            }
        }
        return message;
    }

    /** As RuoYi's publishers build them: an ArrayList of ids, or none for publishAll. */
    private static List<Long> ids(String text) {
        if (text.equals("-")) {
            return null;
        }
        List<Long> ids = new ArrayList<>();
        for (String id : text.split(",")) {
            ids.add(Long.valueOf(id));
        }
        return ids;
    }

    /** PUBLISH over RESP; returns how many subscribers received it. */
    private static long publishRedis(int port, String channel, byte[] payload) throws IOException {
        try (Socket socket = new Socket("127.0.0.1", port)) {
            byte[] name = channel.getBytes(StandardCharsets.UTF_8);
            ByteArrayOutputStream command = new ByteArrayOutputStream();
            command.write(("*3\r\n$7\r\nPUBLISH\r\n$" + name.length + "\r\n").getBytes(StandardCharsets.US_ASCII));
            command.write(name);
            command.write(("\r\n$" + payload.length + "\r\n").getBytes(StandardCharsets.US_ASCII));
            command.write(payload);
            command.write("\r\n".getBytes(StandardCharsets.US_ASCII));
            OutputStream out = socket.getOutputStream();
            out.write(command.toByteArray());
            out.flush();
            BufferedReader reply = new BufferedReader(new InputStreamReader(socket.getInputStream(), StandardCharsets.US_ASCII));
            String line = reply.readLine();
            if (line == null || !line.startsWith(":")) {
                throw new IOException("redis answered " + line);
            }
            return Long.parseLong(line.substring(1));
        }
    }

    /**
     * What RabbitTemplate sends for a converted message: Spring's MessageProperties defaults
     * (persistent, priority 0) with the converter's content type, encoding and type id.
     */
    private void publishAmqp(String uri, String exchange, String contentType, Map<String, Object> headers, byte[] body)
            throws Exception {
        Connection connection = amqp.get(uri);
        if (connection == null || !connection.isOpen()) {
            ConnectionFactory factory = new ConnectionFactory();
            factory.setUri(uri);
            connection = factory.newConnection();
            amqp.put(uri, connection);
        }
        try (Channel channel = connection.createChannel()) {
            // yudao's websocketTopicExchange bean, declared by RabbitAdmin: durable topic.
            channel.exchangeDeclare(exchange, "topic", true);
            AMQP.BasicProperties properties = new AMQP.BasicProperties.Builder()
                    .contentType(contentType)
                    .contentEncoding("UTF-8")
                    .headers(headers)
                    .deliveryMode(2)
                    .priority(0)
                    .build();
            // convertAndSend(exchange, null, message): the template's default routing key "".
            channel.basicPublish(exchange, "", properties, body);
        }
    }
}
