package job

// Counters are the counts of this process so far that Progress leaves out; a metrics file shows
// them while the job runs. Safe while the job runs; they match the Summary's at the end.
type Counters struct {
	Submissions, Polls, Throttled int64
	InDoubt                       int64 // possible billed duplicates (D records) of this process
	InputTokens, OutputTokens     int64
}

// Counters returns the counts of this process so far.
func (j *Job) Counters() Counters {
	c := Counters{Submissions: j.submissions.Load(), InDoubt: j.inDoubt.Load(),
		InputTokens: j.tokensIn.Load(), OutputTokens: j.tokensOut.Load()}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.poll != nil {
		c.Polls = j.poll.Polls()
	}
	if j.submitPacer != nil {
		c.Throttled = j.submitPacer.Throttles() + j.pollPacer.Throttles()
	}
	return c
}

// Input is the input file the job works on: a run's own, or for a resume the one its checkpoint
// names. A resume learns it when it reads the checkpoint, before it counts the rows: Input may
// be called once Progress().Rows is non-zero (that atomic store comes after it), or after Run,
// Resume or Collect returned; until a resume read its checkpoint it is "".
func (j *Job) Input() string { return j.cfg.Input }
