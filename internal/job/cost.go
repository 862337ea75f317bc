package job

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Prices maps a model name (as in gpt://<folder>/<model>/<version>) to the price of 1,000 tokens
// in async mode. Async mode costs half of sync (docs/api.md §5).
type Prices map[string]float64

// DefaultCurrency is the currency of DefaultPrices.
const DefaultCurrency = "RUB"

// DefaultPrices are approximate async prices per 1,000 tokens (input and output alike), half of
// the sync prices of the vendor's pricing page when this was written. Prices change: override them
// with --price for figures you can bill against.
func DefaultPrices() Prices {
	return Prices{
		"yandexgpt-lite": 0.10,
		"yandexgpt":      0.60,
		"llama-lite":     0.10,
		"llama":          0.60,
	}
}

// ParsePrices reads "model=price,model=price" on top of the defaults.
func ParsePrices(s string) (Prices, error) {
	p := DefaultPrices()
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, val, ok := strings.Cut(item, "=")
		f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if !ok || err != nil || f < 0 || strings.TrimSpace(name) == "" {
			return nil, fmt.Errorf("price %q: want model=price per 1000 tokens, e.g. yandexgpt-lite=0.1", item)
		}
		p[strings.TrimSpace(name)] = f
	}
	return p, nil
}

// ModelName extracts the model name from a model URI: gpt://folder/yandexgpt/latest → yandexgpt.
// A fine-tuned model (name@suffix) is priced as its base.
func ModelName(uri string) string {
	rest, ok := strings.CutPrefix(uri, "gpt://")
	if !ok {
		return ""
	}
	parts := strings.Split(rest, "/")
	if len(parts) < 2 {
		return ""
	}
	name, _, _ := strings.Cut(parts[1], "@")
	return name
}

// For returns the price of 1,000 tokens for a model URI.
func (p Prices) For(uri string) (float64, bool) {
	v, ok := p[ModelName(uri)]
	return v, ok
}

// Cost is the price of tokens at price per 1,000.
func Cost(tokens int64, price float64) float64 { return float64(tokens) / 1000 * price }

// String lists the table, for help texts.
func (p Prices) String() string {
	names := make([]string, 0, len(p))
	for n := range p {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for i, n := range names {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "%s=%g", n, p[n])
	}
	return b.String()
}
