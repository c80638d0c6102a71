-- llmledger: materialized view llm_call_rows_mv to llm_call_rows
-- The change stream kept as rows: a winning span with version 2 x rank + 1, the span it
-- replaced marked deleted with version 2 x (the new rank), which outranks the replaced
-- row's own version; llm_calls reads llm_call_rows FINAL. The single definition.
SELECT
    * EXCEPT (new_rank, sign, first_seen),
    if(sign = 1, 2 * new_rank + 1, 2 * new_rank) AS call_version,
    toUInt8(sign = -1) AS call_deleted
FROM ${db}.llm_call_changes
