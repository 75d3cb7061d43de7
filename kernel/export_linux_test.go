package kernel

// QueueWaitOf reads a connection's time in the accept queue as Accept
// does, for tests that compare it with the time they measured.
var QueueWaitOf = queueWait

// ListeningOnly lists the listening sockets with one dump of the
// listening hash per family, without their request sockets: the reading
// Sockets made before it counted SYN queues, for benchmarks to compare.
func ListeningOnly() (n int, err error) {
	err = allListeners(func(diagEntry) { n++ })
	return n, err
}
