package cn.iocoder.yudao.framework.mq.redis.core.pubsub;

import cn.iocoder.yudao.framework.mq.redis.core.message.AbstractRedisMessage;
import com.fasterxml.jackson.annotation.JsonIgnore;

/** yudao's pub/sub message: the channel is the class's simple name and is not serialized. */
public abstract class AbstractRedisChannelMessage extends AbstractRedisMessage {

    @JsonIgnore
    public String getChannel() {
        return getClass().getSimpleName();
    }
}
