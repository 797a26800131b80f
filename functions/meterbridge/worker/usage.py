"""Reading usage: the usage source's value for one customer, meter and service period."""

import time
from dataclasses import dataclass, field
from decimal import Decimal

from aws_lambda_powertools.metrics import MetricUnit

from meterbridge.adapters.usage_sources import UsageQuery, UsageSource
from meterbridge.domain.invoices import ServicePeriod
from meterbridge.domain.reports import PlannedReport, meter_event_timestamp, usage_value
from meterbridge.domain.usage_limits import UsageValueCeilings, check_usage_value
from meterbridge.errors import PermanentError, TransientError
from meterbridge.observability import count
from meterbridge.worker.ports import Stripe


@dataclass(frozen=True)
class Measured:
    """A report's value and meter event timestamp, ready to send."""

    value: Decimal
    timestamp: int


@dataclass(frozen=True)
class Unmeasured:
    """Why a report has no value to send (yet): the usage source, or the timestamp rule."""

    error: TransientError | PermanentError


Measurement = Measured | Unmeasured


@dataclass(frozen=True)
class UsageLimits:
    """The range a report's usage value must fall in (domain/usage_limits.py)."""

    ceilings: UsageValueCeilings = field(default_factory=UsageValueCeilings)
    allow_negative: bool = False


class UsageReader:
    def __init__(
        self,
        source: UsageSource,
        stripe: Stripe,
        tenant_metadata_key: str | None,
        limits: UsageLimits | None = None,
    ):
        self._source = source
        self._stripe = stripe
        self._tenant_key = tenant_metadata_key
        self._limits = limits or UsageLimits()

    def tenant(self, customer_id: str) -> str | None:
        """With TENANT_METADATA_KEY, the customer's tenant (PermanentError if it has none).

        Without it nothing is fetched: Stripe made the invoice for this customer, and a
        customer gone since then makes Stripe reject the meter event asynchronously, which
        the guard records as a failed report (meter error events). A read per invoice would
        cost a Stripe round trip and a share of Stripe's basic rate limit (100 requests/s in
        live mode), which meter events do not count against.
        """
        key = self._tenant_key
        if key is None:
            return None
        customer = self._stripe.customer(customer_id)
        if customer.get("deleted"):
            raise PermanentError(f"customer {customer_id} is deleted")
        tenant = (customer.get("metadata") or {}).get(key)
        if not tenant:
            # Reporting without the tenant would silently bill nothing: stop instead.
            raise PermanentError(
                f"customer {customer_id} has no metadata[{key!r}] (TENANT_METADATA_KEY)"
            )
        return str(tenant)

    def read(self, plan: PlannedReport, tenant: str | None) -> Decimal:
        """The usage source's value for one planned report, now, within the meter's range:
        nothing implausible reaches Stripe."""
        return self.span(plan.customer_id, tenant, plan.meter.event_name, plan.period)

    def measure(
        self, plan: PlannedReport, tenant: str | None, now: int, value: Decimal | None = None
    ) -> Measurement:
        """The report's value and timestamp, or the error that prevents them. `value`, when
        given, is sent instead of the usage source's (an operator's correction)."""
        try:
            timestamp = plan.timestamp
            if timestamp is None:
                timestamp = meter_event_timestamp(plan.period, now, plan.test_clock)
            return Measured(self.read(plan, tenant) if value is None else value, timestamp)
        except (TransientError, PermanentError) as error:
            return Unmeasured(error)

    def span(
        self, customer_id: str, tenant: str | None, meter: str, period: ServicePeriod
    ) -> Decimal:
        """The usage source's value for any span of one customer's meter (a sweep's window),
        within the meter's range like a renewal's."""
        value = self._query(customer_id, tenant, meter, period)
        check_usage_value(
            value,
            meter_event_name=meter,
            ceiling=self._limits.ceilings.for_meter(meter),
            allow_negative=self._limits.allow_negative,
        )
        return value

    def current(self, customer_id: str, meter_event_name: str, period: ServicePeriod) -> Decimal:
        """The usage source's value now, for reconciliation: usage may arrive after reporting."""
        tenant = None
        if self._tenant_key:
            metadata = self._stripe.customer(customer_id).get("metadata") or {}
            tenant = metadata.get(self._tenant_key)
        query = UsageQuery(
            customer=customer_id,
            tenant=str(tenant) if tenant else None,
            meter=meter_event_name,
            start=period.start,
            end=period.end,
        )
        return usage_value(self._source.usage(query))

    def _query(
        self, customer_id: str, tenant: str | None, meter: str, period: ServicePeriod
    ) -> Decimal:
        """One report's query, its latency counted (UsageSourceLatency)."""
        started = time.perf_counter()
        try:
            raw = self._source.usage(
                UsageQuery(
                    customer=customer_id,
                    tenant=tenant,
                    meter=meter,
                    start=period.start,
                    end=period.end,
                )
            )
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            count("UsageSourceLatency", elapsed_ms, MetricUnit.Milliseconds)
        return usage_value(raw)
