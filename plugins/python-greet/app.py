"""python-greet: the example Python listener. It greets with a configured greeting, sends
notices to one user or to every user of a user type, and lists who is online.

  py-greet  {"name"}                             -> py-greeting {"text", "lang", "version"} to the sender
  py-notify {"text", "toUserId"?, "toUserType"?}  -> py-notice {"from", "text"} to that user, or to
                                                    every user of the type; py-notify-ack
                                                    {"to": "user", "online"} or {"to": "user-type",
                                                    "onlineUsers": count} to the sender
  py-who    {"userType"?}                        -> py-online {"userType", "users"} to the sender

Config (sidecar python-greet.toml, [config]): ``greeting`` (default "Hello").
"""

from dataclasses import dataclass
from typing import Optional

import switchboard as sb

VERSION = "0.1.0"


@dataclass
class Greet:
    name: str


@dataclass
class Notify:
    text: str
    to_user_id: Optional[str] = None
    to_user_type: Optional[int] = None


@dataclass
class Who:
    user_type: Optional[int] = None


class Listener(sb.Listener):
    name = "python-greet"
    version = VERSION

    @sb.on("py-greet")
    def greet(self, ctx: sb.Context, content: Greet) -> None:
        greeting = ctx.config("greeting", "Hello")
        ctx.reply(
            "py-greeting",
            {"text": f"{greeting}, {content.name}!", "lang": "python", "version": VERSION},
        )

    @sb.on("py-notify")
    def notify(self, ctx: sb.Context, content: Notify) -> None:
        user_type = ctx.user.user_type if content.to_user_type is None else content.to_user_type
        notice = {"from": ctx.user.user_id, "text": content.text}
        if content.to_user_id:
            to = sb.UserRef(user_type, content.to_user_id)
            ctx.send_to_user(to, "py-notice", notice)
            ctx.reply("py-notify-ack", {"to": "user", "online": ctx.is_online(to)})
        else:
            ctx.send_to_user_type(user_type, "py-notice", notice)
            online = len(ctx.online_users(user_type))
            ctx.reply("py-notify-ack", {"to": "user-type", "onlineUsers": online})

    @sb.on("py-who")
    def who(self, ctx: sb.Context, content: Who) -> None:
        user_type = ctx.user.user_type if content.user_type is None else content.user_type
        users = sorted(ctx.online_users(user_type))
        ctx.reply("py-online", {"userType": user_type, "users": users})
