"""The ledger table as template.yaml declares it, for tests and benchmarks that need one
without the whole local stack (which creates its resources from template.yaml itself)."""

from typing import Any

from meterbridge.adapters.ledger import (
    BY_CUSTOMER_INDEX,
    BY_INVOICE_INDEX,
    CREATED_AT,
    CUSTOMER_ID,
    INVOICE_ID,
    KEY_ATTRIBUTES,
    PARTITION_KEY,
    SORT_KEY,
    TTL_ATTRIBUTE,
)


def create_ledger_table(client: Any, table_name: str, *, time_to_live: bool = True) -> None:
    """`time_to_live=False` for a stand-in without the TTL API (nothing here reads it)."""
    client.create_table(
        TableName=table_name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in KEY_ATTRIBUTES],
        KeySchema=[
            {"AttributeName": PARTITION_KEY, "KeyType": "HASH"},
            {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": BY_INVOICE_INDEX,
                "KeySchema": [
                    {"AttributeName": INVOICE_ID, "KeyType": "HASH"},
                    {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
            {
                "IndexName": BY_CUSTOMER_INDEX,
                "KeySchema": [
                    {"AttributeName": CUSTOMER_ID, "KeyType": "HASH"},
                    {"AttributeName": CREATED_AT, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
        ],
    )
    if time_to_live:
        client.update_time_to_live(
            TableName=table_name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
