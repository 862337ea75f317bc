package job

import (
	"testing"
	"time"

	"github.com/batchgpt/batchgpt/internal/api"
	"github.com/batchgpt/batchgpt/poller"
)

func TestPaceETA(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 1, 0, 0, 0, time.UTC)
	var p pace
	if _, ok := p.eta(100); ok {
		t.Fatal("an ETA with no pace")
	}
	// 1,000 rows a second for 10 minutes, reported every 30 s.
	for s := 0; s <= 600; s += 30 {
		p.add(t0.Add(time.Duration(s)*time.Second), int64(s)*1000)
	}
	if eta, ok := p.eta(7_000_000); !ok || eta < 6990*time.Second || eta > 7010*time.Second {
		t.Errorf("7,000,000 rows left at 1,000/s: eta %v, %v; want about 7,000 s", eta, ok)
	}
	if len(p.points) > 6 {
		t.Errorf("%d points kept: the window is about 2 minutes", len(p.points))
	}
	// The pace halves: within a window the ETA follows it.
	base := int64(600_000)
	for s := 630; s <= 900; s += 30 {
		base += 15_000
		p.add(t0.Add(time.Duration(s)*time.Second), base)
	}
	if eta, _ := p.eta(500_000); eta < 990*time.Second || eta > 1010*time.Second {
		t.Errorf("500,000 rows left at 500/s: eta %v, want about 1,000 s", eta)
	}
	// Reports closer together than the clock moves are ignored; many are bounded.
	for range 1000 {
		p.add(t0.Add(900*time.Second), base)
	}
	for i := range 1000 {
		p.add(t0.Add(900*time.Second+time.Duration(i+1)*time.Millisecond), base+int64(i))
	}
	if len(p.points) > paceKeep {
		t.Errorf("%d points kept, want at most %d", len(p.points), paceKeep)
	}
}

// TestProgressETAWithReusedRows: rows answered from the cache count once in the pace. They were
// counted twice (Submitted counts them already), so a run of mostly cached rows said eta=0s with
// millions of rows left.
func TestProgressETAWithReusedRows(t *testing.T) {
	j := &Job{submitPacer: api.NewPacer(0, 0), schedule: poller.NewSchedule()}
	j.total.Store(10_000)
	j.submitted.Store(4_000) // 3,000 of them from the cache
	j.cacheHits.Store(3_000)
	j.Progress()
	time.Sleep(100 * time.Millisecond)
	j.submitted.Store(5_000) // 1,000 rows in about 0.1 s: 5,000 left take about 0.5 s
	j.cacheHits.Store(3_800)
	p := j.Progress()
	if p.ETA < 200*time.Millisecond || p.ETA > 2*time.Second {
		t.Fatalf("eta %v with 5,000 of 10,000 rows left at about 10,000 rows/s; want about 0.5 s", p.ETA)
	}
}
