package cli

import (
	"slices"

	"github.com/backlog-dev/backlog"
	"github.com/backlog-dev/backlog/kernel"
)

// hostPersonality is the rules of the kernel this program runs on, with its
// actual settings where they can be read, and the defaults of its system
// otherwise.
func hostPersonality() backlog.Personality {
	if p, err := kernel.HostPersonality(); err == nil {
		return p
	}
	return backlog.Host()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
