#!/bin/sh
# nightly.sh INPUT — the command a cron line or a timer runs every night on a file that is
# re-exported under the same name. `batchgpt run` does the rest: it carries on a run left
# unfinished, does nothing for a run that is complete, and for new content first collects the
# paid-for operations of the earlier run, archives it under its date, then starts a new run that
# the result cache answers for every row that did not change.
#
# Environment: YC_SERVICE_ACCOUNT_KEY_FILE (or YC_API_KEY), YC_FOLDER_ID.
# Exit codes: 0 done; 3 rows failed (see the results file); 4 authentication, or the folder or
# model refused by the preflight; 5 another batchgpt holds the checkpoint; 130 interrupted (the
# next night carries on); 1 an endpoint unreachable.
# `batchgpt check` is the free preflight: nothing is spent when the credentials or the model fail.
batchgpt check || exit
exec batchgpt run --no-progress "$1"
