package org.dromara.common.websocket.dto;

import java.io.Serial;
import java.io.Serializable;
import java.util.List;

/** RuoYi-Vue-Plus's WebSocketMessageDto (Lombok's @Data written out). */
public class WebSocketMessageDto implements Serializable {

    @Serial
    private static final long serialVersionUID = 1L;

    private List<Long> sessionKeys;

    private String message;

    public List<Long> getSessionKeys() { return sessionKeys; }
    public void setSessionKeys(List<Long> sessionKeys) { this.sessionKeys = sessionKeys; }
    public String getMessage() { return message; }
    public void setMessage(String message) { this.message = message; }
}
