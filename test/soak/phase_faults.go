package main

func (s *suite) phaseFaults() *phaseResult { return newResult("faults") }
