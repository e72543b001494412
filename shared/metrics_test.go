package shared

import "testing"

func TestMetricSample(t *testing.T) {
	text := "# HELP x y\n# TYPE rivet_a counter\nrivet_a 3\nrivet_a_total 9\nrivet_b{s=\"ok\"} 2.5\nrivet_c NaN\n"
	for series, want := range map[string]float64{"rivet_a": 3, "rivet_a_total": 9, `rivet_b{s="ok"}`: 2.5} {
		if v, ok := MetricSample(text, series); !ok || v != want {
			t.Errorf("%s: %v, %v; want %v", series, v, ok, want)
		}
	}
	if _, ok := MetricSample(text, "rivet_b"); ok {
		t.Error("rivet_b without its labels was found")
	}
	if _, ok := MetricSample(text, "rivet_none"); ok {
		t.Error("an absent series was found")
	}
}
