//go:build !unix

package netstack

import "time"

// cpuTime returns 0 where getrusage is missing: CPU per connection then
// reads 0.
func cpuTime() time.Duration { return 0 }
