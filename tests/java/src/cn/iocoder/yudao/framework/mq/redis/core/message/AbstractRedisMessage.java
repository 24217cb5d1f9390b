package cn.iocoder.yudao.framework.mq.redis.core.message;

import java.util.HashMap;
import java.util.Map;

/** yudao's base of Redis messages (Lombok's @Data written out): the headers carry the tenant. */
public abstract class AbstractRedisMessage {

    private Map<String, String> headers = new HashMap<>();

    public Map<String, String> getHeaders() {
        return headers;
    }

    public void setHeaders(Map<String, String> headers) {
        this.headers = headers;
    }

    public String getHeader(String key) {
        return headers.get(key);
    }

    public void addHeader(String key, String value) {
        headers.put(key, value);
    }
}
