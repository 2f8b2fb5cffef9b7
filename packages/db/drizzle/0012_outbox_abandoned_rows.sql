-- Rows that upstream's API dispatcher abandoned after its max attempts carry available_at = 'infinity'
-- and no failed_at. outbox_exchange would read such a row as backing off forever and hold every later
-- row of its stream behind it. Here they are failed rows: visible to `outbox status`, requeueable (requeue
-- sets available_at to now), and no longer pending. available_at keeps 'infinity', so upstream's own
-- dead-row counts (available_at = 'infinity') still see them while both dispatchers run.
UPDATE event_outbox
   SET failed_at = now(),
       last_error = coalesce(last_error, 'abandoned by the upstream dispatcher (available_at = infinity)')
 WHERE available_at = 'infinity'::timestamptz AND dispatched_at IS NULL AND failed_at IS NULL;
--> statement-breakpoint
-- An upstream dispatcher still running beside this one (during a migration) may abandon more rows: the
-- trigger fails them as they are written. Its WHEN clause keeps it off every other insert and update.
CREATE OR REPLACE FUNCTION event_outbox_fail_abandoned() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.failed_at := now();
  NEW.last_error := coalesce(NEW.last_error, 'abandoned by the upstream dispatcher (available_at = infinity)');
  RETURN NEW;
END
$$;
--> statement-breakpoint
DROP TRIGGER IF EXISTS event_outbox_fail_abandoned ON event_outbox;
--> statement-breakpoint
CREATE TRIGGER event_outbox_fail_abandoned
  BEFORE INSERT OR UPDATE OF available_at ON event_outbox
  FOR EACH ROW
  WHEN (NEW.available_at = 'infinity'::timestamptz AND NEW.dispatched_at IS NULL AND NEW.failed_at IS NULL)
  EXECUTE FUNCTION event_outbox_fail_abandoned();
