package codes

import "testing"

func TestString(t *testing.T) {
	for c, want := range map[Code]string{OK: "OK", Canceled: "CANCELLED", ResourceExhausted: "RESOURCE_EXHAUSTED", Unauthenticated: "UNAUTHENTICATED", 17: "Code(17)", -1: "Code(-1)"} {
		if got := c.String(); got != want {
			t.Errorf("Code(%d).String() = %q, want %q", int(c), got, want)
		}
	}
}
