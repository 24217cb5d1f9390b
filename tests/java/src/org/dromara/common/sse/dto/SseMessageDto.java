package org.dromara.common.sse.dto;

import java.io.Serial;
import java.io.Serializable;
import java.util.List;

/** RuoYi-Vue-Plus's SseMessageDto (Lombok's @Data written out). */
public class SseMessageDto implements Serializable {

    @Serial
    private static final long serialVersionUID = 1L;

    private List<Long> userIds;

    private String message;

    public List<Long> getUserIds() { return userIds; }
    public void setUserIds(List<Long> userIds) { this.userIds = userIds; }
    public String getMessage() { return message; }
    public void setMessage(String message) { this.message = message; }
}
