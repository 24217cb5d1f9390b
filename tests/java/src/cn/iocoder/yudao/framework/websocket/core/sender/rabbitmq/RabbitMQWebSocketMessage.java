package cn.iocoder.yudao.framework.websocket.core.sender.rabbitmq;

/** yudao's RabbitMQWebSocketMessage, fields in yudao's order (Lombok's @Data with chained setters written out). */
public class RabbitMQWebSocketMessage implements java.io.Serializable {

    private String sessionId;
    private Integer userType;
    private Long userId;
    private String messageType;
    private String messageContent;

    public String getSessionId() { return sessionId; }
    public RabbitMQWebSocketMessage setSessionId(String sessionId) { this.sessionId = sessionId; return this; }
    public Integer getUserType() { return userType; }
    public RabbitMQWebSocketMessage setUserType(Integer userType) { this.userType = userType; return this; }
    public Long getUserId() { return userId; }
    public RabbitMQWebSocketMessage setUserId(Long userId) { this.userId = userId; return this; }
    public String getMessageType() { return messageType; }
    public RabbitMQWebSocketMessage setMessageType(String messageType) { this.messageType = messageType; return this; }
    public String getMessageContent() { return messageContent; }
    public RabbitMQWebSocketMessage setMessageContent(String messageContent) { this.messageContent = messageContent; return this; }
}
