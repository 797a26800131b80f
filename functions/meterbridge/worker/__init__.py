"""The worker's steps, one file each, in the order a renewal meets them.

    invoices.py        reading invoices: every line (paged), the invoice's clock
    planning.py        which lines and meters get reports, and their identifiers
    usage.py           the usage source's value (or why there is none)
    sending.py         one report: claim → value → meter event → record, exactly once
    holding.py         INVOICE_GUARD=hold: hold the draft, release it
    reporting.py       invoice.created: plan, hold, send each report, record the outcome
    confirmation.py    delayed checks that Stripe counts what was sent
    reconciliation.py  invoice.finalized: the finalized lines against the usage
    meter_errors.py    Stripe's asynchronous rejections of sent reports
    subscription_changes.py  an item removed, its price switched or the subscription cancelled
                       mid-period: report up to that moment, alarm what Stripe missed
    sweeps.py          continuous reporting: the schedule's sweep fanned out page by page
    windows.py         one customer's meter reported window by window under its watermark
    true_up.py         the renewal with continuous reporting: close the period, send the rest
    policy.py          the choices settings make; ports.py the interfaces each step needs
    composition.py     the one place the steps are wired (handler, operator CLI, tests)

The router is handlers/worker.py.
"""
