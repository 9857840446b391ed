"""The AsyncAPI 3.0 object model of ``pydantic-asyncapi``, with the few objects it gets
wrong for a Kafka document corrected by subclassing.

- A Security Scheme Object requires only ``type`` (the library requires the fields
  of the HTTP and OAuth kinds on every kind), and is listed under
  ``components.securitySchemes`` (the library spells it ``securitySchemas``).
- A server's ``security`` is a list of schemes or references, not a map.
- The Kafka message binding (the message key) is missing.
- A schema under ``components.schemas`` is kept as pydantic generated it: the
  library's Schema Object drops the keywords it does not know.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic_asyncapi.base import ExtendableBaseModel, Reference
from pydantic_asyncapi.common import MessageBindings as _MessageBindings
from pydantic_asyncapi.common import SecuritySchemaType
from pydantic_asyncapi.v3 import AsyncAPI as _AsyncAPI
from pydantic_asyncapi.v3 import Channel as _Channel
from pydantic_asyncapi.v3 import Components as _Components
from pydantic_asyncapi.v3 import Message as _Message
from pydantic_asyncapi.v3 import Server as _Server

__all__ = [
    "AsyncAPI",
    "Channel",
    "Components",
    "KafkaMessageBinding",
    "Message",
    "MessageBindings",
    "Reference",
    "SecurityScheme",
    "Server",
]


class SecurityScheme(ExtendableBaseModel):
    type: SecuritySchemaType
    description: str | None = None


class Server(_Server):
    security: list[SecurityScheme | Reference] | None = None  # type: ignore[assignment]


class KafkaMessageBinding(ExtendableBaseModel):
    key: dict[str, Any] | Reference | None = None
    schemaIdLocation: Literal["header", "payload"] | None = None
    bindingVersion: str = "0.5.0"


class MessageBindings(_MessageBindings):
    kafka: KafkaMessageBinding | Reference | None = None  # type: ignore[assignment]


class Message(_Message):
    bindings: MessageBindings | None = None


class Channel(_Channel):
    messages: dict[str, Message | Reference] | None = None  # type: ignore[assignment]


class Components(_Components):
    schemas: dict[str, dict[str, Any]] | None = None  # type: ignore[assignment]
    messages: dict[str, Message | Reference] | None = None  # type: ignore[assignment]
    securitySchemes: dict[str, SecurityScheme | Reference] | None = None


class AsyncAPI(_AsyncAPI):
    asyncapi: Literal["3.0.0"] = "3.0.0"
    servers: dict[str, Server | Reference] | None = None  # type: ignore[assignment]
    channels: dict[str, Channel | Reference] | None = None  # type: ignore[assignment]
    components: Components | None = None
