"""The dead-letter queue: see what is in it and why, and put it back on the event queue.

Replay never loses a message: it is sent to the event queue first and deleted from the
dead-letter queue only once SQS accepted the copy. A crash between the two leaves the
message in both queues; that duplicate is harmless because the body — the Stripe event,
with its id — is copied byte for byte with its message attributes, and the worker
dedupes on the event id and claims each report in the ledger. Within one run a message is
replayed at most once (tracked by message id, which survives visibility timeouts).

SQS's own StartMessageMoveTask is used when the whole queue goes back and the API is
there; it allows one active task per source queue, so a running one is reported, not
doubled. moto lacks it: replay falls back to receive → send → delete and says so.

Replay refuses a pair of queues it cannot vouch for (`refuse_unsafe_source`): a source
that is not the target's own dead-letter queue (another stack's DLQ has another ledger, so
its events can bill twice once Stripe forgot their identifiers) unless the operator names
it with --force-source, and, whatever is forced, a queue a Lambda function reads (a live
event queue drained into another stack).
"""

import contextlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from meterbridge.messages import ATTR_BODY_KIND, ATTR_EVENT_ID, ATTR_EVENT_TYPE, read_body
from meterbridge_local.ops.config import OperatorError, queue_arn, queue_attributes

SQS_BATCH = 10  # SQS's limit for ReceiveMessage and every *Batch call
# SendMessageBatch limits the whole request, not each message, to 256 KiB.
SQS_BATCH_BYTES = 262_144
DEFAULT_HOLD_SECONDS = 300  # how long looked-at messages stay hidden while a command runs

Progress = Callable[[int], None]  # called with the number of messages just handled


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message and what it is about."""

    message_id: str
    receipt_handle: str
    body: str
    message_attributes: dict[str, Any]
    receive_count: int
    sent_at_ms: int | None
    event_id: str | None
    event_type: str | None
    invoice_id: str | None
    problem: str | None  # set when the body is not a Stripe event

    @classmethod
    def from_sqs(cls, message: dict[str, Any]) -> "DeadLetter":
        attributes = message.get("MessageAttributes") or {}

        def text(name: str) -> str | None:
            value = attributes.get(name) or {}
            return value.get("StringValue")

        system = message.get("Attributes") or {}
        event_id, event_type, invoice_id, problem = (
            text(ATTR_EVENT_ID),
            text(ATTR_EVENT_TYPE),
            None,
            None,
        )
        try:
            envelope, _ = read_body(message.get("Body", ""), text(ATTR_BODY_KIND) or "event")
        except (ValueError, KeyError, TypeError) as error:  # pydantic's error is a ValueError
            problem = f"body is not a Stripe event ({type(error).__name__})"
        else:
            event_id, event_type = envelope.id, envelope.type
            if envelope.object_type == "invoice":
                invoice_id = envelope.object_id
        sent = system.get("SentTimestamp")
        return cls(
            message_id=message["MessageId"],
            receipt_handle=message["ReceiptHandle"],
            body=message.get("Body", ""),
            message_attributes=attributes,
            receive_count=int(system.get("ApproximateReceiveCount", 0)),
            sent_at_ms=int(sent) if sent else None,
            event_id=event_id,
            event_type=event_type,
            invoice_id=invoice_id,
            problem=problem,
        )

    def age_seconds(self, now: float) -> float | None:
        return None if self.sent_at_ms is None else max(0.0, now - self.sent_at_ms / 1000)


@dataclass(frozen=True)
class Selection:
    """Which dead letters a replay takes; no filter means all of them."""

    event_types: frozenset[str] = frozenset()
    invoice_id: str | None = None

    @property
    def everything(self) -> bool:
        return not self.event_types and self.invoice_id is None

    def matches(self, letter: DeadLetter) -> bool:
        if self.event_types and letter.event_type not in self.event_types:
            return False
        return self.invoice_id is None or letter.invoice_id == self.invoice_id


@dataclass
class ReplayResult:
    method: str  # "move-task" | "receive-send-delete"
    note: str | None = None  # why the move task was not used
    replayed: list[DeadLetter] = field(default_factory=list)
    not_selected: int = 0  # left in the queue: not matching the filters
    beyond_max: int = 0  # left in the queue: matching, but over --max
    send_failures: list[tuple[DeadLetter, str]] = field(default_factory=list)
    left_in_both: list[tuple[DeadLetter, str]] = field(default_factory=list)  # sent, not deleted
    task_handle: str | None = None
    moved: int = 0
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.send_failures and not self.left_in_both


class MoveTaskUnavailable(Exception):
    """This SQS (moto, or an old endpoint) has no StartMessageMoveTask."""


class DeadLetterQueue:
    """Reads and replays one dead-letter queue into its event queue."""

    def __init__(
        self,
        sqs: Any,
        dead_letter_queue_url: str,
        event_queue_url: str | None,
        *,
        move_task_sqs: Any = None,
        wait_seconds: int = 0,
        hold_seconds: int = DEFAULT_HOLD_SECONDS,
        poll_seconds: float = 1.0,
    ):
        self._sqs = sqs
        self._move_sqs = move_task_sqs or sqs
        self.url = dead_letter_queue_url
        self.event_queue_url = event_queue_url
        # Real SQS short polls sample a subset of hosts: a 1-2 s long poll sees them all.
        self._wait = wait_seconds
        self._hold = hold_seconds
        self._poll = poll_seconds

    def depth(self) -> int:
        attributes = queue_attributes(self._sqs, self.url, ["ApproximateNumberOfMessages"])
        return int(attributes.get("ApproximateNumberOfMessages", 0))

    # --- list ---------------------------------------------------------------------------

    def peek(self, limit: int | None = None, progress: Progress | None = None) -> list[DeadLetter]:
        """Every dead letter (up to `limit`), left in the queue: each is received, then made
        visible again. Receiving counts as a receive (ApproximateReceiveCount grows)."""
        seen: dict[str, DeadLetter] = {}
        stale = 0  # receives in a row that brought only messages already seen
        try:
            while limit is None or len(seen) < limit:
                batch = self._receive()
                fresh = [letter for letter in batch if letter.message_id not in seen]
                for letter in batch:
                    seen[letter.message_id] = letter  # newest receipt handle wins
                stale = 0 if fresh else stale + 1
                if not batch or stale * SQS_BATCH > len(seen):
                    break
                # Only seen ones came back (their hold ran out on a long listing): this
                # receive hid them again; go on until the queue shows nothing new.
                if progress and fresh:
                    progress(len(fresh))
        finally:
            self._release(seen.values())
        letters = list(seen.values())
        return letters[:limit] if limit is not None else letters

    # --- replay -------------------------------------------------------------------------

    def replay(
        self,
        selection: Selection,
        *,
        max_messages: int | None = None,
        dry_run: bool = False,
        use_move_task: bool = True,
        progress: Progress | None = None,
    ) -> ReplayResult:
        if self.event_queue_url is None:
            raise OperatorError(
                "replay needs the event queue: pass --queue-url or export QUEUE_URL"
            )
        note = None
        if selection.everything and max_messages is None and not dry_run and use_move_task:
            try:
                return self._move_all(progress)
            except MoveTaskUnavailable as reason:
                note = (
                    f"StartMessageMoveTask unavailable here ({reason}); used receive → send"
                    " → delete"
                )
        elif use_move_task:
            chosen = "--dry-run" if dry_run else "a filter or --max"
            note = (
                f"{chosen} given: StartMessageMoveTask moves everything, so receive → send → delete"
            )
        result = ReplayResult(method="receive-send-delete", note=note, dry_run=dry_run)
        self._copy_selected(selection, max_messages, dry_run, result, progress)
        return result

    def _move_all(self, progress: Progress | None) -> ReplayResult:
        source = queue_arn(self._sqs, self.url)
        destination = queue_arn(self._sqs, self.event_queue_url or "")
        running = self._running_task(source)
        if running is not None:
            moved = running.get("ApproximateNumberOfMessagesMoved", 0)
            raise OperatorError(
                f"a message move task is already running on this dead-letter queue (handle"
                f" {running.get('TaskHandle')}, moved {moved}"
                f" of {running.get('ApproximateNumberOfMessagesToMove', '?')}); SQS allows one per"
                " queue: wait for it, or cancel it with `aws sqs cancel-message-move-task"
                " --task-handle …`"
            )
        try:
            handle = self._move_sqs.start_message_move_task(
                SourceArn=source, DestinationArn=destination
            )["TaskHandle"]
        except ClientError as error:
            raise OperatorError(f"StartMessageMoveTask failed: {_code(error)}") from error
        result = ReplayResult(method="move-task", task_handle=handle)
        reported = 0
        while True:
            task = self._running_task(source, any_status=True) or {}
            moved = int(task.get("ApproximateNumberOfMessagesMoved", 0))
            if progress and moved > reported:
                progress(moved - reported)
                reported = moved
            status = task.get("Status")
            if status in {"COMPLETED", "FAILED", "CANCELLED"}:
                result.moved = moved
                if status != "COMPLETED":
                    reason = task.get("FailureReason") or status
                    raise OperatorError(
                        f"message move task {handle} {status.lower()} after {moved} messages:"
                        f" {reason}"
                    )
                return result
            time.sleep(self._poll)

    def _running_task(self, source_arn: str, any_status: bool = False) -> dict[str, Any] | None:
        try:
            tasks = self._move_sqs.list_message_move_tasks(SourceArn=source_arn, MaxResults=1)
        except ClientError as error:
            raise MoveTaskUnavailable(f"ListMessageMoveTasks answered {_code(error)}") from error
        except BotoCoreError as error:
            raise MoveTaskUnavailable(str(error)) from error
        for task in tasks.get("Results", []):
            if any_status or task.get("Status") == "RUNNING":
                return dict(task)
        return None

    def _copy_selected(
        self,
        selection: Selection,
        max_messages: int | None,
        dry_run: bool,
        result: ReplayResult,
        progress: Progress | None,
    ) -> None:
        handled: set[str] = set()
        held: dict[str, DeadLetter] = {}  # to make visible again at the end
        stale = 0  # receives in a row that brought only messages already handled
        try:
            while max_messages is None or len(result.replayed) < max_messages:
                batch = self._receive()
                fresh = [letter for letter in batch if letter.message_id not in handled]
                for letter in batch:  # a held message that came back: keep its new handle
                    if letter.message_id in held:
                        held[letter.message_id] = letter
                stale = 0 if fresh else stale + 1
                if not batch or stale * SQS_BATCH > len(handled):
                    break
                # A batch of only handled messages (their hold ran out during a long run) is
                # hidden again by this receive: go on until a full pass finds nothing new.
                chosen: list[DeadLetter] = []
                for letter in fresh:
                    handled.add(letter.message_id)
                    taken = len(result.replayed) + len(chosen)
                    if not selection.matches(letter):
                        result.not_selected += 1
                        held[letter.message_id] = letter
                    elif max_messages is not None and taken >= max_messages:
                        result.beyond_max += 1
                        held[letter.message_id] = letter
                    else:
                        chosen.append(letter)
                if dry_run:
                    result.replayed.extend(chosen)
                    held.update((letter.message_id, letter) for letter in chosen)
                else:
                    self._send_then_delete(chosen, result, held)
                if progress and fresh:
                    progress(len(fresh))
        finally:
            self._release(held.values())

    def _send_then_delete(
        self, letters: list[DeadLetter], result: ReplayResult, held: dict[str, DeadLetter]
    ) -> None:
        for group in batches_within(letters, SQS_BATCH_BYTES):
            self._send_group_then_delete(group, result, held)

    def _send_group_then_delete(
        self, letters: list[DeadLetter], result: ReplayResult, held: dict[str, DeadLetter]
    ) -> None:
        if not letters:
            return
        by_id = {str(index): letter for index, letter in enumerate(letters)}
        try:
            answer = self._sqs.send_message_batch(
                QueueUrl=self.event_queue_url,
                Entries=[
                    {
                        "Id": key,
                        "MessageBody": letter.body,
                        "MessageAttributes": _sendable(letter.message_attributes),
                    }
                    for key, letter in by_id.items()
                ],
            )
        except (ClientError, BotoCoreError) as error:
            for letter in letters:
                result.send_failures.append((letter, f"send failed: {error}"))
                held[letter.message_id] = letter
            return
        for failure in answer.get("Failed", []):
            letter = by_id.pop(failure["Id"])
            result.send_failures.append((letter, f"send failed: {failure.get('Message')}"))
            held[letter.message_id] = letter
        sent = [by_id[entry["Id"]] for entry in answer.get("Successful", [])]
        if not sent:
            return
        result.replayed.extend(sent)
        try:
            deleted = self._sqs.delete_message_batch(
                QueueUrl=self.url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": letter.receipt_handle}
                    for index, letter in enumerate(sent)
                ],
            )
        except (ClientError, BotoCoreError) as error:
            result.left_in_both.extend((letter, str(error)) for letter in sent)
            return
        for failure in deleted.get("Failed", []):
            result.left_in_both.append((sent[int(failure["Id"])], str(failure.get("Message"))))

    # --- plumbing -----------------------------------------------------------------------

    def _receive(self) -> list[DeadLetter]:
        try:
            answer = self._sqs.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=SQS_BATCH,
                VisibilityTimeout=self._hold,
                WaitTimeSeconds=self._wait,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
        except (ClientError, BotoCoreError) as error:
            raise OperatorError(f"cannot receive from {self.url}: {error}") from error
        return [DeadLetter.from_sqs(message) for message in answer.get("Messages", [])]

    def _release(self, letters: Iterable[DeadLetter]) -> None:
        """Make looked-at messages visible again at once (else they hide for the hold time)."""
        pending = list(letters)
        for start in range(0, len(pending), SQS_BATCH):
            chunk = pending[start : start + SQS_BATCH]
            # On failure they reappear by themselves after the hold time; nothing is lost.
            with contextlib.suppress(ClientError, BotoCoreError):
                self._sqs.change_message_visibility_batch(
                    QueueUrl=self.url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": x.receipt_handle, "VisibilityTimeout": 0}
                        for i, x in enumerate(chunk)
                    ],
                )


def _queue_name(url_or_arn: str) -> str:
    return url_or_arn.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]


def refuse_unsafe_source(
    sqs: Any,
    lambda_client: Any,
    source_url: str,
    target_url: str | None,
    *,
    force_source: str | None = None,
) -> None:
    """Raise OperatorError unless draining `source_url` (into `target_url`, when replaying)
    is safe: no Lambda event source mapping reads the source, and the target's RedrivePolicy
    names the source as its dead-letter queue (or `force_source` repeats its name)."""
    source_name = _queue_name(source_url)
    source_arn = queue_arn(sqs, source_url)
    try:
        mappings = lambda_client.list_event_source_mappings(EventSourceArn=source_arn).get(
            "EventSourceMappings", []
        )
    except (ClientError, BotoCoreError) as error:
        reason = _code(error) if isinstance(error, ClientError) else str(error)
        raise OperatorError(
            f"cannot check that {source_name} feeds no Lambda function"
            f" (lambda:ListEventSourceMappings: {reason}); allow that action for this role,"
            " then run the command again"
        ) from error
    if mappings:
        functions = ", ".join(
            sorted({_queue_name(str(m.get("FunctionArn", "?"))) for m in mappings})
        )
        raise OperatorError(
            f"{source_name} is a live event queue (Lambda function {functions} reads it),"
            " not a dead-letter queue: dlq commands never drain it; pass the dead-letter"
            " queue with --dlq-url, or leave it out to use the event queue's RedrivePolicy"
        )
    if target_url is None:
        return
    target_name = _queue_name(target_url)
    policy = queue_attributes(sqs, target_url, ["RedrivePolicy"]).get("RedrivePolicy")
    own = json.loads(policy).get("deadLetterTargetArn") if policy else None
    if own == source_arn:
        if force_source is not None and force_source != source_name:
            raise OperatorError(
                f"--force-source {force_source!r} does not name the source queue"
                f" {source_name} (which needs no forcing: it is {target_name}'s own"
                " dead-letter queue); leave --force-source out"
            )
        return
    if force_source == source_name:
        return
    names = f"names {_queue_name(own)}" if own else "names no dead-letter queue"
    hint = (
        f"repeat the source's name to replay anyway: --force-source {source_name}"
        if force_source is None
        else f"--force-source {force_source!r} is not the source queue's name ({source_name})"
    )
    raise OperatorError(
        f"{source_name} is not the dead-letter queue of {target_name} (its RedrivePolicy"
        f" {names}): events from another queue can bill twice, since another stack keeps"
        f" another ledger; check --dlq-url and --queue-url, or {hint}"
    )


def _sendable(attributes: dict[str, Any]) -> dict[str, Any]:
    """Received message attributes in SendMessage's shape (the list fields are reserved)."""
    sendable: dict[str, Any] = {}
    for name, value in attributes.items():
        copy = {"DataType": value["DataType"]}
        for key in ("StringValue", "BinaryValue"):
            if key in value:
                copy[key] = value[key]
        sendable[name] = copy
    return sendable


def _code(error: ClientError) -> str:
    details = error.response.get("Error", {})
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = details.get("Code") or str(status)
    return f"{code} (HTTP {status})" if status and str(status) != code else str(code)


def sqs_size(letter: DeadLetter) -> int:
    """Bytes SQS counts for a message: body plus each attribute's name, type and value."""
    size = len(letter.body.encode())
    for name, value in letter.message_attributes.items():
        payload = value.get("StringValue") or value.get("BinaryValue") or ""
        size += len(name.encode()) + len(str(value.get("DataType", "")).encode())
        size += len(payload.encode() if isinstance(payload, str) else payload)
    return size


def batches_within(letters: list[DeadLetter], limit: int) -> list[list[DeadLetter]]:
    """Consecutive groups whose total size stays within `limit` (a larger single message
    travels alone: SQS judges it, as it did when it first accepted the message)."""
    groups: list[list[DeadLetter]] = []
    current: list[DeadLetter] = []
    total = 0
    for letter in letters:
        size = sqs_size(letter)
        if current and total + size > limit:
            groups.append(current)
            current, total = [], 0
        current.append(letter)
        total += size
    if current:
        groups.append(current)
    return groups
