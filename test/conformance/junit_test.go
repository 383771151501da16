package conformance

import (
	"encoding/xml"
	"fmt"
	"os"
	"strings"
)

// summary is what the suite counted, read from its junit.xml: the same
// counters it prints as "Pass....: N" and renders into report.html.
// results.yaml holds only per-API and per-data statuses, no counts.
type summary struct {
	Total, Passed, Failed, Errors, Skipped, Disabled int
	NotPassed                                        []testCase
}

type testCase struct {
	Name, Status, Detail string
}

// junit mirrors the parts of the suite's junit.xml we read.
type junit struct {
	Suites []struct {
		Tests    int `xml:"tests,attr"`
		Failures int `xml:"failures,attr"`
		Errors   int `xml:"errors,attr"`
		Skipped  int `xml:"skipped,attr"`
		Disabled int `xml:"disabled,attr"`
		Cases    []struct {
			Name      string `xml:"name,attr"`
			Status    string `xml:"status,attr"`
			SystemOut string `xml:"system-out"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

func readJUnit(path string) (summary, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return summary{}, err
	}
	var j junit
	if err := xml.Unmarshal(data, &j); err != nil {
		return summary{}, fmt.Errorf("parse %s: %w", path, err)
	}
	if len(j.Suites) != 1 {
		return summary{}, fmt.Errorf("%s: want 1 test suite, got %d", path, len(j.Suites))
	}
	s := j.Suites[0]
	sum := summary{
		Total:    s.Tests,
		Failed:   s.Failures,
		Errors:   s.Errors,
		Skipped:  s.Skipped,
		Disabled: s.Disabled,
	}
	sum.Passed = sum.Total - sum.Failed - sum.Errors - sum.Skipped - sum.Disabled
	for _, c := range s.Cases {
		if c.Status != "passed" {
			// system-out holds the failing checks; system-err the whole
			// request log, too long to print for every case.
			sum.NotPassed = append(sum.NotPassed, testCase{c.Name, c.Status, strings.TrimSpace(c.SystemOut)})
		}
	}
	return sum, nil
}
