"""The TezSign protobuf schema, built at runtime from the tables of tezsign.md §6.

`tezsign.proto` beside this file is the same schema in .proto form (for people and other tools);
no generated `_pb2` module is used, so there is no protoc/gencode version to keep in step with the
`protobuf` runtime. The message classes live in a private descriptor pool.
"""

from __future__ import annotations

from typing import Any, Final

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

PACKAGE: Final = "signer_guard.tezsign.v1"
_F = descriptor_pb2.FieldDescriptorProto

# Scalar proto3 types used by the schema.
SCALARS: Final[dict[str, int]] = {
    "string": _F.TYPE_STRING,
    "bytes": _F.TYPE_BYTES,
    "bool": _F.TYPE_BOOL,
    "uint32": _F.TYPE_UINT32,
    "uint64": _F.TYPE_UINT64,
}

ENUMS: Final[dict[str, list[tuple[str, int]]]] = {
    "LockState": [("LOCK_STATE_UNSPECIFIED", 0), ("LOCKED", 1), ("UNLOCKED", 2)],
}

# message -> [(number, name, type, repeated)]; type is a scalar, an enum or a message name.
FieldSpec = tuple[int, str, str, bool]
_PER_KEY: Final[list[FieldSpec]] = [(1, "results", "PerKeyResult", True)]
MESSAGES: Final[dict[str, list[FieldSpec]]] = {
    "SignRequest": [(1, "tz4", "string", False), (2, "message", "bytes", False)],
    "SignResponse": [(1, "signature", "bytes", False)],
    "StatusRequest": [],
    "StatusResponse": [(1, "keys", "KeyStatus", True)],
    "KeyStatus": [
        (1, "key_id", "string", False),
        (2, "lock_state", "LockState", False),
        (3, "tz4", "string", False),
        (4, "bl_pubkey", "string", False),
        (5, "pop", "string", False),
        (10, "last_block_level", "uint64", False),
        (11, "last_preattestation_level", "uint64", False),
        (12, "last_attestation_level", "uint64", False),
        (20, "last_block_round", "uint32", False),
        (21, "last_preattestation_round", "uint32", False),
        (22, "last_attestation_round", "uint32", False),
        (30, "state_corrupted", "bool", False),
    ],
    "UnlockRequest": [(1, "key_ids", "string", True), (2, "passphrase", "bytes", False)],
    "PerKeyResult": [
        (1, "key_id", "string", False),
        (2, "ok", "bool", False),
        (3, "error", "string", False),
    ],
    "UnlockResponse": _PER_KEY,
    "LockRequest": [(1, "key_ids", "string", True)],
    "LockResponse": _PER_KEY,
    "SetLevelRequest": [(1, "key_id", "string", False), (3, "level", "uint64", False)],
    "NewKeysRequest": [(1, "key_ids", "string", True), (2, "passphrase", "bytes", False)],
    "NewKeyPerKeyResult": [
        (1, "key_id", "string", False),
        (2, "bl_pubkey", "string", False),
        (3, "tz4", "string", False),
        (4, "ok", "bool", False),
        (5, "error", "string", False),
    ],
    "NewKeysResponse": [(1, "results", "NewKeyPerKeyResult", True)],
    "LogsRequest": [(1, "limit", "uint32", False)],
    "LogsResponse": [(1, "lines", "string", True)],
    "VersionRequest": [],
    "VersionResponse": [(1, "version", "string", False), (2, "build_date", "string", False)],
    "InitMasterRequest": [(1, "deterministic", "bool", False), (2, "passphrase", "bytes", False)],
    "InitInfoRequest": [],
    "InitInfoResponse": [
        (1, "master_present", "bool", False),
        (2, "deterministic_enabled", "bool", False),
    ],
    "DeleteKeysRequest": [(1, "key_ids", "string", True), (2, "passphrase", "bytes", False)],
    "DeleteKeysResponse": _PER_KEY,
    "Ok": [(1, "ok", "bool", False)],
    "Error": [(1, "code", "uint32", False), (2, "message", "string", False)],
}

# Envelopes: a oneof named "payload". Note the numbers differ between Request and Response.
REQUEST_ONEOF: Final[list[tuple[int, str, str]]] = [
    (1, "unlock", "UnlockRequest"),
    (2, "lock", "LockRequest"),
    (3, "status", "StatusRequest"),
    (4, "sign", "SignRequest"),
    (5, "new_keys", "NewKeysRequest"),
    (6, "logs", "LogsRequest"),
    (7, "init_master", "InitMasterRequest"),
    (8, "init_info", "InitInfoRequest"),
    (9, "set_level", "SetLevelRequest"),
    (10, "delete_keys", "DeleteKeysRequest"),
    (11, "version", "VersionRequest"),
]
RESPONSE_ONEOF: Final[list[tuple[int, str, str]]] = [
    (1, "unlock", "UnlockResponse"),
    (2, "lock", "LockResponse"),
    (3, "status", "StatusResponse"),
    (4, "sign", "SignResponse"),
    (5, "new_key", "NewKeysResponse"),
    (6, "logs", "LogsResponse"),
    (7, "init_info", "InitInfoResponse"),
    (8, "delete_keys", "DeleteKeysResponse"),
    (9, "version", "VersionResponse"),
    (15, "ok", "Ok"),
    (16, "error", "Error"),
]
ENVELOPES: Final = {"Request": REQUEST_ONEOF, "Response": RESPONSE_ONEOF}


def _field(
    msg: descriptor_pb2.DescriptorProto, number: int, name: str, type_name: str, repeated: bool
) -> descriptor_pb2.FieldDescriptorProto:
    field = msg.field.add()
    field.name = name
    field.number = number
    field.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    if type_name in SCALARS:
        field.type = SCALARS[type_name]  # type: ignore[assignment]
    elif type_name in ENUMS:
        field.type = _F.TYPE_ENUM
        field.type_name = f".{PACKAGE}.{type_name}"
    else:
        field.type = _F.TYPE_MESSAGE
        field.type_name = f".{PACKAGE}.{type_name}"
    return field


def file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """The schema as a FileDescriptorProto (what protoc would produce from tezsign.proto)."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name="signer_guard/tezsign.proto", package=PACKAGE, syntax="proto3"
    )
    for enum_name, values in ENUMS.items():
        enum = fdp.enum_type.add(name=enum_name)
        for value_name, number in values:
            enum.value.add(name=value_name, number=number)
    for envelope, choices in ENVELOPES.items():
        msg = fdp.message_type.add(name=envelope)
        msg.oneof_decl.add(name="payload")
        for number, name, type_name in choices:
            _field(msg, number, name, type_name, False).oneof_index = 0
    for msg_name, fields in MESSAGES.items():
        msg = fdp.message_type.add(name=msg_name)
        for number, name, type_name, repeated in fields:
            _field(msg, number, name, type_name, repeated)
    return fdp


_POOL: Final = descriptor_pool.DescriptorPool()
_POOL.Add(file_descriptor())
_CLASSES: Final[dict[str, type[Message]]] = {
    name: message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))
    for name in [*ENVELOPES, *MESSAGES]
}

LOCK_STATE: Final = {number: name for name, number in ENUMS["LockState"]}


def new(name: str, **fields: Any) -> Any:
    """A new message of type `name` (fields are dynamic, hence `Any`)."""
    return _CLASSES[name](**fields)


def parse(name: str, data: bytes) -> Any:
    """Parse `data` as message `name`; raises google.protobuf.message.DecodeError."""
    msg = _CLASSES[name]()
    msg.ParseFromString(data)
    return msg
