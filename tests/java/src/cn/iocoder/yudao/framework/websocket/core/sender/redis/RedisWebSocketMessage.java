package cn.iocoder.yudao.framework.websocket.core.sender.redis;

/** yudao's RedisWebSocketMessage, fields in yudao's order (Lombok's @Data with chained setters written out). */
public class RedisWebSocketMessage extends cn.iocoder.yudao.framework.mq.redis.core.pubsub.AbstractRedisChannelMessage {

    private String sessionId;
    private Integer userType;
    private Long userId;
    private String messageType;
    private String messageContent;

    public String getSessionId() { return sessionId; }
    public RedisWebSocketMessage setSessionId(String sessionId) { this.sessionId = sessionId; return this; }
    public Integer getUserType() { return userType; }
    public RedisWebSocketMessage setUserType(Integer userType) { this.userType = userType; return this; }
    public Long getUserId() { return userId; }
    public RedisWebSocketMessage setUserId(Long userId) { this.userId = userId; return this; }
    public String getMessageType() { return messageType; }
    public RedisWebSocketMessage setMessageType(String messageType) { this.messageType = messageType; return this; }
    public String getMessageContent() { return messageContent; }
    public RedisWebSocketMessage setMessageContent(String messageContent) { this.messageContent = messageContent; return this; }
}
