package shared

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// Metrics returns the Prometheus text a coordinator serves at PathMetrics.
func (c *Client) Metrics(ctx context.Context) (string, error) {
	resp, err := c.Open(ctx, PathMetrics, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", PathMetrics, resp.Status)
	}
	return string(body), err
}

// MetricSample finds series (a metric name with its labels, written as /metrics writes
// them, e.g. `rivet_steps_total{status="succeeded"}`) in Prometheus text and returns its
// value; false when the series is not there.
func MetricSample(text, series string) (float64, bool) {
	for line := range strings.SplitSeq(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}
