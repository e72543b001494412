package shared

import "fmt"

// HumanBytes writes a byte count as operators read it: 512 B, 1.5 KiB, 3.0 GiB.
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// HumanRate writes a transfer rate (Progress.BytesPerSec) as HumanBytes per second, and
// none at all when there is no rate.
func HumanRate(bytesPerSec float64) string {
	if bytesPerSec <= 0 {
		return ""
	}
	return HumanBytes(int64(bytesPerSec)) + "/s"
}
