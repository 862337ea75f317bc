package job

import "time"

// pace remembers how many rows had left the queue (submitted, answered from the cache or by a
// duplicate) at the last few progress reports, so that the ETA follows the pace the run really
// keeps: with no quota (or an adaptive one) the quota says nothing about when the run ends.
type pace struct {
	points []pacePoint // oldest first, at most paceKeep
}

type pacePoint struct {
	at   time.Time
	done int64
}

const (
	paceWindow = 2 * time.Minute // the pace is measured over about this much of the recent past
	paceKeep   = 64
)

// add records that done rows had left the queue at now.
func (p *pace) add(now time.Time, done int64) {
	if n := len(p.points); n > 0 && !now.After(p.points[n-1].at) {
		return
	}
	p.points = append(p.points, pacePoint{now, done})
	// Drop what is older than the window, keeping one point before it to measure from.
	drop := 0
	for drop+2 < len(p.points) && now.Sub(p.points[drop+1].at) >= paceWindow {
		drop++
	}
	if len(p.points)-drop > paceKeep {
		drop = len(p.points) - paceKeep
	}
	p.points = append(p.points[:0], p.points[drop:]...)
}

// eta is the time left rows take at the recent pace; false when there is no pace yet.
func (p *pace) eta(left int64) (time.Duration, bool) {
	if len(p.points) < 2 || left <= 0 {
		return 0, false
	}
	first, last := p.points[0], p.points[len(p.points)-1]
	rows, secs := last.done-first.done, last.at.Sub(first.at).Seconds()
	if rows <= 0 || secs <= 0 {
		return 0, false
	}
	return time.Duration(float64(left) / (float64(rows) / secs) * float64(time.Second)), true
}
