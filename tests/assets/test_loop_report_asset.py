"""The loop report reads each day's quarantine reasons from its materialization, whichever form the
metadata took when that day ran: the window spans days recorded before and after metadata tables."""

import dagster as dg

from assets.report import reason_counts


def test_quarantine_reasons_read_from_a_table_or_from_the_json_of_older_days():
    table = dg.MetadataValue.table(
        [dg.TableRecord({"reason": "temperature", "rows": 5}), dg.TableRecord({"reason": "<b>site</b>", "rows": 2})],
        schema=dg.TableSchema([dg.TableColumn("reason", "string"), dg.TableColumn("rows", "int")]))
    assert reason_counts(table) == {"temperature": 5, "<b>site</b>": 2}
    assert reason_counts({"temperature": 5}) == {"temperature": 5}
    assert reason_counts(None) == {}
