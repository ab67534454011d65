-- Report indexes that queries use, and no others.  Every index is rebuilt by a
-- bulk import and maintained on every single insert, so each must earn its keep
-- (measured on 1M demo reports, docs/benchmarks.md "Report indexes").
--
-- * H3 cells (r7-r11) are grouped over, never looked up: hex tiles and stats
--   select their reports by `geom &&` (GiST) and group by the cell column, and
--   the incremental hex refresh finds a changed cell's reports through the
--   cell's envelope (tiles/rollup.py).  Five btrees go.
-- * category (15 codes, 1-20 % each) and opd (13 codes): a filter on them alone
--   is answered as fast by a parallel scan as by the index (measured 246 vs
--   255 ms for banjir's 19 %); listing pages walk reports_created newest first.
--   They go.
-- * status: most reports are closed (selesai/ditolak, 95 %); what is asked of
--   status is the open work -- "my OPD's open reports", counts of waiting
--   reports -- so one partial index on the open reports replaces the full
--   status index (28 ms instead of 245 ms for a count of 'menunggu' without it;
--   the partial index holds about 5 % of the rows).
-- * the idempotency key keeps its meaning and name, with external_id first: a
--   lookup by a source system's id alone can use it, and a CRM export (listed
--   in ticket order) arrives presorted for it.
DROP INDEX reports_h3_r7;
DROP INDEX reports_h3_r8;
DROP INDEX reports_h3_r9;
DROP INDEX reports_h3_r10;
DROP INDEX reports_h3_r11;
DROP INDEX reports_category;
DROP INDEX reports_opd;
DROP INDEX reports_status;
CREATE INDEX reports_open ON reports (status, opd) WHERE status NOT IN ('selesai', 'ditolak');
ALTER TABLE reports
    DROP CONSTRAINT reports_source_external,
    ADD CONSTRAINT reports_source_external UNIQUE (external_id, source);
