"""`meterbridge dlq list | replay` against moto over HTTP: nothing lost, nothing doubled."""

import io
import json
import uuid
import zipfile
from collections import Counter
from typing import Any

import boto3
import pytest

from meterbridge.adapters.ledger import DynamoDbLedger
from meterbridge.adapters.queue import SqsQueue
from meterbridge.domain.records import InvoiceChanges, InvoiceStatus
from meterbridge_local.aws import MotoServer
from meterbridge_local.cli import main
from meterbridge_local.ledger_table import create_ledger_table
from meterbridge_local.local_command import StripeTarget, print_summary
from meterbridge_local.stack import LocalStack
from tests.support.ops import cli, queue_with_dead_letters
from tests.support.stripe_events import snapshot_event
from tests.support.worker import enqueue


@pytest.fixture
def queues(aws: MotoServer) -> dict[str, str]:
    queue, dlq = queue_with_dead_letters("events", max_receive_count=3)
    return {"queue": queue, "dlq": dlq}


def invoice_event(invoice_id: str, event_type: str = "invoice.created") -> dict[str, Any]:
    return snapshot_event(event_type, {"id": invoice_id, "object": "invoice", "status": "draft"})


def everything(queue_url: str) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    """Receive and delete every message: (body, sorted attributes) of each."""
    sqs = boto3.client("sqs")
    found: list[tuple[str, tuple[tuple[str, str], ...]]] = []
    while True:
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            return found
        for message in messages:
            attributes = tuple(
                sorted(
                    (name, value["StringValue"])
                    for name, value in message.get("MessageAttributes", {}).items()
                )
            )
            found.append((message["Body"], attributes))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def visible(queue_url: str) -> int:
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"  # all released
    return int(attributes["ApproximateNumberOfMessages"])


def dead_letter(queues: dict[str, str], *events: dict[str, Any]) -> None:
    for event in events:
        enqueue(queues["dlq"], event)


def test_replay_restores_every_message_once_with_body_and_attributes_unchanged(
    queues: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    events = [invoice_event(f"in_{i}") for i in range(23)]  # three receive batches
    dead_letter(queues, *events)
    boto3.client("sqs").send_message(QueueUrl=queues["dlq"], MessageBody="not json at all")
    originals = everything(queues["dlq"])
    for body, attributes in originals:  # put them back exactly as they were
        SqsQueue(queues["dlq"], boto3.client("sqs")).send(body, dict(attributes))

    code, output = cli(capsys, "dlq", "replay", "--queue-url", queues["queue"])

    assert code == 0, output
    # moto has no StartMessageMoveTask: the fallback is used, and said so.
    assert "StartMessageMoveTask unavailable" in output
    assert "Replayed 24 message(s)" in output
    assert visible(queues["dlq"]) == 0
    assert Counter(everything(queues["queue"])) == Counter(originals)  # each exactly once
    ids = {dict(attributes)["stripe_event_id"] for _, attributes in originals if attributes}
    assert ids == {event["id"] for event in events}


def test_filters_pick_by_event_type_and_invoice_and_leave_the_rest_visible(
    queues: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    wanted = invoice_event("in_A")
    others = [
        invoice_event("in_B"),
        invoice_event("in_A", "invoice.finalized"),
        invoice_event("in_C"),
    ]
    dead_letter(queues, wanted, *others)

    code, output = cli(
        capsys,
        "dlq",
        "replay",
        "--queue-url",
        queues["queue"],
        "--event-type",
        "invoice.created",
        "--invoice",
        "in_A",
    )

    assert code == 0, output
    assert "a filter or --max given" in output
    assert "3 not matching the filters left in place" in output
    assert [json.loads(body)["id"] for body, _ in everything(queues["queue"])] == [wanted["id"]]
    assert visible(queues["dlq"]) == 3  # released at once, not hidden for the hold time
    left = {json.loads(body)["id"] for body, _ in everything(queues["dlq"])}
    assert left == {event["id"] for event in others}


def test_max_replays_that_many_and_dry_run_changes_nothing(
    queues: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    dead_letter(queues, *(invoice_event(f"in_{i}") for i in range(5)))

    code, output = cli(capsys, "dlq", "replay", "--queue-url", queues["queue"], "--dry-run")
    assert code == 0, output
    assert "Would replay 5 message(s)" in output
    assert "dry run: nothing was sent or deleted" in output
    assert visible(queues["queue"]) == 0
    assert visible(queues["dlq"]) == 5

    code, output = cli(capsys, "dlq", "replay", "--queue-url", queues["queue"], "--max", "2")
    assert code == 0, output
    assert "Replayed 2 message(s)" in output
    assert visible(queues["queue"]) == 2
    assert visible(queues["dlq"]) == 3

    code, output = cli(capsys, "dlq", "replay", "--dlq-url", queues["dlq"], "--queue-url",
                       queues["queue"], "--no-move-task")  # fmt: skip
    assert code == 0, output
    assert "StartMessageMoveTask" not in output
    assert visible(queues["queue"]) == 5
    assert visible(queues["dlq"]) == 0


def test_list_shows_each_event_and_why_from_the_ledger_and_keeps_them(
    queues: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    table = f"ledger-{uuid.uuid4().hex[:8]}"
    create_ledger_table(boto3.client("dynamodb"), table)
    ledger = DynamoDbLedger(table, boto3.client("dynamodb"))
    ledger.update_invoice(
        "in_poison",
        "cus_1",
        InvoiceChanges(status=InvoiceStatus.FAILED, reason="customer cus_1 is deleted"),
        now=1_700_000_000,
    )
    poison = invoice_event("in_poison")
    unknown = invoice_event("in_unknown")
    dead_letter(queues, poison, unknown)
    boto3.client("sqs").send_message(QueueUrl=queues["dlq"], MessageBody="{broken")

    code, output = cli(
        capsys, "dlq", "list", "--queue-url", queues["queue"], "--ledger-table", table
    )

    assert code == 0, output
    assert "3 message(s) in the dead-letter queue" in output
    assert poison["id"] in output
    assert "customer cus_1 is deleted" in output  # the reason the worker recorded
    assert "no ledger record: it failed before reporting began" in output
    assert "body is not a Stripe event" in output
    assert "invoice.created" in output
    assert visible(queues["dlq"]) == 3  # listing removes nothing


def test_bad_input_is_refused_with_a_clear_message(
    queues: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QUEUE_URL", raising=False)
    monkeypatch.delenv("DEAD_LETTER_QUEUE_URL", raising=False)
    code, output = cli(capsys, "dlq", "replay")
    assert code == 2
    assert "pass --queue-url or export QUEUE_URL" in output

    code, output = cli(capsys, "dlq", "list", "--queue-url", queues["dlq"])  # no redrive policy
    assert code == 2
    assert "has no dead-letter queue" in output

    with pytest.raises(SystemExit) as refused:
        main(["dlq", "replay", "--queue-url", queues["queue"], "--max", "0"])
    assert refused.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_the_export_line_of_meterbridge_local_is_all_the_commands_need(
    aws: MotoServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new user's path: copy the export line, then `meterbridge dlq list` just works."""
    with LocalStack(
        aws=aws,
        stack_name=f"ops-{uuid.uuid4().hex[:8]}",
        handlers={"WebhookFunction": lambda e, c: None, "WorkerFunction": lambda e, c: None},
        stripe_api_base="http://127.0.0.1:9",
        stripe_api_key="sk_test_x",
        webhook_secret="whsec_x",
        start_poller=False,
    ) as stack:
        printed = io.StringIO()
        target = StripeTarget("http://127.0.0.1:9", "sk_test_x", "whsec_x", "test")
        print_summary(printed, stack, target, None)
        [line] = [x for x in printed.getvalue().splitlines() if x.startswith("  export ")]
        exported = dict(pair.split("=", 1) for pair in line.split()[1:])
        assert exported["QUEUE_URL"] == stack.event_queue_url
        assert exported["DEAD_LETTER_QUEUE_URL"] == stack.dead_letter_queue_url
        assert exported["LEDGER_TABLE"] == stack.ledger_table_name
        enqueue(stack.dead_letter_queue_url, invoice_event("in_local"))
        # Undone before the stack restores the environment it set: undone after, it would
        # leave this stack's queues exported to the next test in the process.
        with monkeypatch.context() as exported_environment:
            for name in ("QUEUE_URL", "DEAD_LETTER_QUEUE_URL", "LEDGER_TABLE"):
                exported_environment.setenv(name, exported[name])
            code, output = cli(capsys, "dlq", "list")

        assert code == 0, output
        assert "in_local" in output
        assert "no ledger record" in output  # the ledger table was found and read


def test_replay_outlasting_the_hold_time_still_finds_every_selected_message(
    queues: dict[str, str],
) -> None:
    """Held messages that reappear mid-run (the hold ran out) must not end the run early."""
    import time

    from meterbridge_local.ops.dlq import DeadLetterQueue, Selection

    others = [invoice_event(f"in_other_{n}", "invoice.finalized") for n in range(20)]
    wanted = [invoice_event(f"in_wanted_{n}") for n in range(5)]
    dead_letter(queues, *others, *wanted)
    dlq = DeadLetterQueue(boto3.client("sqs"), queues["dlq"], queues["queue"], hold_seconds=1)

    result = dlq.replay(
        Selection(event_types=frozenset({"invoice.created"})),
        use_move_task=False,
        progress=lambda _: time.sleep(1.2),  # a slow run: holds expire between receives
    )

    assert result.ok
    assert sorted(letter.invoice_id or "" for letter in result.replayed) == sorted(
        f"in_wanted_{n}" for n in range(5)
    )
    assert len(everything(queues["queue"])) == 5


def test_replay_batches_stay_within_sqs_request_limit() -> None:
    """moto does not enforce SendMessageBatch's 256 KiB per request; SQS does."""
    from meterbridge_local.ops.dlq import SQS_BATCH_BYTES, DeadLetter, batches_within, sqs_size

    def letter(size: int) -> DeadLetter:
        body = json.dumps({**invoice_event("in_big"), "padding": "x" * size})
        attributes = {"body_kind": {"DataType": "String", "StringValue": "event"}}
        return DeadLetter.from_sqs(
            {"MessageId": str(uuid.uuid4()), "ReceiptHandle": "h", "Body": body,
             "MessageAttributes": attributes}
        )  # fmt: skip

    letters = [letter(100_000) for _ in range(10)]
    groups = batches_within(letters, SQS_BATCH_BYTES)

    assert [m.message_id for group in groups for m in group] == [m.message_id for m in letters]
    assert all(sum(sqs_size(m) for m in group) <= SQS_BATCH_BYTES for group in groups)
    assert len(groups) == 5  # two 100 KB messages per request


# --------------------------------------------------------------------------- replay safety


def _queue_name(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def _with_event_source_mapping(queue_url: str) -> str:
    """A Lambda function reading `queue_url`, as the stack's worker reads its event queue."""
    suffix = uuid.uuid4().hex[:8]
    role = boto3.client("iam").create_role(
        RoleName=f"worker-{suffix}",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "sts:AssumeRole",
                        "Principal": {"Service": "lambda.amazonaws.com"},
                    }
                ],
            }
        ),
    )["Role"]["Arn"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as package:
        package.writestr("handler.py", "def handler(event, context):\n    return None\n")
    name = f"worker-{suffix}"
    lambda_client = boto3.client("lambda")
    lambda_client.create_function(
        FunctionName=name,
        Runtime="python3.13",
        Role=role,
        Handler="handler.handler",
        Code={"ZipFile": archive.getvalue()},
    )
    arn = boto3.client("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    lambda_client.create_event_source_mapping(EventSourceArn=arn, FunctionName=name)
    return name


def test_replay_refuses_another_stacks_dead_letter_queue_unless_forced_by_name(
    queues: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, other_dlq = queue_with_dead_letters("other-stack", max_receive_count=3)
    dead_letter({"dlq": other_dlq}, invoice_event("in_elsewhere"))
    other = _queue_name(other_dlq)

    code, output = cli(
        capsys, "dlq", "replay", "--dlq-url", other_dlq, "--queue-url", queues["queue"]
    )

    assert code == 2
    assert len(output.strip().splitlines()) == 1, output  # one line, no traceback
    assert f"{other} is not the dead-letter queue of {_queue_name(queues['queue'])}" in output
    assert f"its RedrivePolicy names {_queue_name(queues['dlq'])}" in output
    assert f"--force-source {other}" in output
    assert visible(other_dlq) == 1
    assert visible(queues["queue"]) == 0

    code, output = cli(capsys, "dlq", "replay", "--dlq-url", other_dlq, "--queue-url",
                       queues["queue"], "--force-source", "some-other-name")  # fmt: skip
    assert code == 2
    assert f"is not the source queue's name ({other})" in output
    assert visible(other_dlq) == 1

    code, output = cli(capsys, "dlq", "replay", "--dlq-url", other_dlq, "--queue-url",
                       queues["queue"], "--force-source", other)  # fmt: skip
    assert code == 0, output
    assert "Replayed 1 message(s)" in output
    [(body, _)] = everything(queues["queue"])
    assert json.loads(body)["data"]["object"]["id"] == "in_elsewhere"
    assert visible(other_dlq) == 0


def test_replay_into_a_queue_without_a_redrive_policy_is_refused(
    queues: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    plain = boto3.client("sqs").create_queue(QueueName=f"plain-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    dead_letter(queues, invoice_event("in_1"))

    code, output = cli(capsys, "dlq", "replay", "--dlq-url", queues["dlq"], "--queue-url", plain)

    assert code == 2
    assert "its RedrivePolicy names no dead-letter queue" in output
    assert visible(queues["dlq"]) == 1


def test_a_queue_a_lambda_function_reads_is_never_drained_even_when_forced(
    queues: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    function = _with_event_source_mapping(queues["queue"])
    enqueue(queues["queue"], invoice_event("in_live"))
    live = _queue_name(queues["queue"])
    _, target_dlq = queue_with_dead_letters("target", max_receive_count=3)
    target = target_dlq.replace("target-dlq-", "target-")  # the queue whose DLQ that is
    capsys.readouterr()  # moto's own complaints about Docker, from creating the function

    code, output = cli(capsys, "dlq", "replay", "--dlq-url", queues["queue"], "--queue-url",
                       target, "--force-source", live)  # fmt: skip

    assert code == 2
    assert len(output.strip().splitlines()) == 1, output
    assert f"{live} is a live event queue (Lambda function {function} reads it)" in output
    assert visible(queues["queue"]) == 1  # untouched

    code, output = cli(capsys, "dlq", "list", "--dlq-url", queues["queue"])
    assert code == 2
    assert "live event queue" in output
    assert visible(queues["queue"]) == 1
