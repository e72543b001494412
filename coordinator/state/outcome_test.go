package state

// outcome is an Apply method's two results in one value, for tests that look at both.
type outcome struct {
	Result
	Err error
}

func out(res Result, err error) outcome { return outcome{res, err} }
