package main

func (s *suite) phaseFlood() *phaseResult { return newResult("flood") }
