#!/bin/sh
# nightly.sh INPUT — run INPUT through batchgpt, or carry on with the run a previous night (or a
# crash) left unfinished. Meant for cron and systemd: it never starts a run twice and never pays
# twice for a row that already has an operation id.
#
# Environment: YC_SERVICE_ACCOUNT_KEY_FILE (or YC_API_KEY), YC_FOLDER_ID.
set -u
input=$1
checkpoint="${input%.*}.checkpoint.json"
if [ -e "$checkpoint" ]; then
	batchgpt resume --no-progress "$checkpoint"
else
	batchgpt run --no-progress "$input"
fi
code=$?
# 0 all rows succeeded; 3 finished with failed rows (see the results file);
# 4 authentication; 5 another batchgpt holds the checkpoint; 130 interrupted (resumable).
case $code in
0) echo "batchgpt: $input done" ;;
5) echo "batchgpt: $input is still being processed by another run" ;;
*) echo "batchgpt: $input stopped with exit code $code; the next run resumes it" >&2 ;;
esac
exit $code
