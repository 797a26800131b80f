"""One DynamoDB table, as the ledger uses it: one read-and-decode path, one update builder,
and botocore's errors turned into meterbridge's failure classes."""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from meterbridge.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_TRANSIENT_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionConflictException",
    }
)
BATCH_GET_LIMIT = 100  # keys per BatchGetItem request (DynamoDB's limit)

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def encode(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in item.items() if v is not None}


def decode(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


class ConditionFailed(Exception):
    """A conditional write's condition did not hold."""


@dataclass
class Update:
    """One UpdateItem request: SET / REMOVE / ADD clauses with their placeholders."""

    sets: list[str] = field(default_factory=list)
    removes: list[str] = field(default_factory=list)
    adds: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)

    def name(self, attribute: str) -> str:
        placeholder = f"#{attribute}"
        self.names[placeholder] = attribute
        return placeholder

    def value(self, value: Any, hint: str = "v") -> str:
        placeholder = f":{hint}{len(self.values)}"
        self.values[placeholder] = value
        return placeholder

    def set(self, attribute: str, value: Any) -> "Update":
        self.sets.append(f"{self.name(attribute)} = {self.value(value)}")
        return self

    def set_if_missing(self, attribute: str, value: Any) -> "Update":
        name = self.name(attribute)
        self.sets.append(f"{name} = if_not_exists({name}, {self.value(value)})")
        return self

    def increment(self, attribute: str) -> "Update":
        name = self.name(attribute)
        self.sets.append(f"{name} = if_not_exists({name}, {self.value(0)}) + {self.value(1)}")
        return self

    def remove(self, *attributes: str) -> "Update":
        self.removes += [self.name(attribute) for attribute in attributes]
        return self

    def add_to_set(self, attribute: str, members: Iterable[str]) -> "Update":
        self.adds.append(f"{self.name(attribute)} {self.value(set(members))}")
        return self

    def set_all(self, assigned: dict[str, Any]) -> "Update":
        for attribute, value in sorted(assigned.items()):
            if value is None:
                self.remove(attribute)
            else:
                self.set(attribute, value)
        return self

    def expression(self) -> str:
        clauses = []
        for keyword, parts in (("SET", self.sets), ("REMOVE", self.removes), ("ADD", self.adds)):
            if parts:
                clauses.append(f"{keyword} " + ", ".join(parts))
        return " ".join(clauses)


class DynamoDbTable:
    """Reads and writes on one table; boto3 never leaves this class and its subclasses."""

    def __init__(self, table_name: str, client: "DynamoDBClient"):
        self._table = table_name
        self._client = client

    def _get(self, key: dict[str, str]) -> dict[str, Any] | None:
        found = self._call(
            lambda: self._client.get_item(
                TableName=self._table, Key=encode(key), ConsistentRead=True
            )
        )
        item = found.get("Item")
        return decode(item) if item else None

    def _get_many(self, keys: list[dict[str, str]]) -> list[dict[str, Any]]:
        """Consistent reads of many items, BATCH_GET_LIMIT keys a request; keys DynamoDB
        leaves unprocessed (throttling) are asked again."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(keys), BATCH_GET_LIMIT):
            pending: Any = {
                self._table: {
                    "Keys": [encode(key) for key in keys[start : start + BATCH_GET_LIMIT]],
                    "ConsistentRead": True,
                }
            }
            while pending:
                answer = self._batch(pending)
                found += [decode(item) for item in answer.get("Responses", {}).get(self._table, [])]
                pending = answer.get("UnprocessedKeys") or None
        return found

    def _batch(self, request: Any) -> Any:
        return self._call(lambda: self._client.batch_get_item(RequestItems=request))

    def _put(
        self,
        item: dict[str, Any],
        condition: str | None = None,
        *,
        names: dict[str, str] | None = None,
        values: dict[str, Any] | None = None,
    ) -> None:
        request: dict[str, Any] = {"TableName": self._table, "Item": encode(item)}
        if condition is not None:
            request["ConditionExpression"] = condition
        if names:
            request["ExpressionAttributeNames"] = names
        if values:
            request["ExpressionAttributeValues"] = encode(values)
        self._call(lambda: self._client.put_item(**request), conditional=condition is not None)

    def _write(
        self,
        key: dict[str, str],
        update: Update,
        condition: str | None = None,
        return_values: str | None = None,
    ) -> Any:
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": encode(key),
            "UpdateExpression": update.expression(),
            "ExpressionAttributeNames": update.names,
        }
        if update.values:
            request["ExpressionAttributeValues"] = encode(update.values)
        if condition is not None:
            request["ConditionExpression"] = condition
        if return_values is not None:
            request["ReturnValues"] = return_values
        return self._call(
            lambda: self._client.update_item(**request), conditional=condition is not None
        )

    def _write_if(self, key: dict[str, str], update: Update, condition: str) -> bool:
        """The update, if `condition` holds: whether it was applied."""
        try:
            self._write(key, update, condition)
        except ConditionFailed:
            return False
        return True

    def _query(
        self, index: str, key: str, value: str, sort_at_least: tuple[str, str] | None = None
    ) -> Iterator[dict[str, Any]]:
        condition = "#key = :value"
        names = {"#key": key}
        values = {":value": {"S": value}}
        if sort_at_least is not None:
            condition += " AND #sort >= :sort"
            names["#sort"] = sort_at_least[0]
            values[":sort"] = {"S": sort_at_least[1]}
        start: dict[str, Any] | None = None
        while True:
            request: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": index,
                "KeyConditionExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
            if start:
                request["ExclusiveStartKey"] = start
            page = self._page(request)
            for item in page.get("Items", []):
                yield decode(item)
            start = page.get("LastEvaluatedKey")
            if not start:
                return

    def _page(self, request: dict[str, Any]) -> Any:
        return self._call(lambda: self._client.query(**request))

    def _call(self, call: Callable[[], Any], conditional: bool = False) -> Any:
        try:
            return call()
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if conditional and code == "ConditionalCheckFailedException":
                raise ConditionFailed from error
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in _TRANSIENT_CODES or status >= 500:
                raise TransientError(f"DynamoDB {code} on ledger {self._table}") from error
            raise PermanentError(f"DynamoDB {code} on ledger {self._table}: {error}") from error
        except BotoCoreError as error:
            raise TransientError(
                f"DynamoDB unreachable for ledger {self._table}: {error}"
            ) from error
