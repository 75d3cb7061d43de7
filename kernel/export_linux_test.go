package kernel

// QueueWaitOf reads a connection's time in the accept queue as Accept
// does, for tests that compare it with the time they measured.
var QueueWaitOf = queueWait
