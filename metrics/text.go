package metrics

import (
	"bufio"
	"io"
	"math"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
)

// textContentType is Prometheus's text exposition format, version 0.0.4.
const textContentType = "text/plain; version=0.0.4; charset=utf-8"

// writeText writes metric families in the text format. It is
// client_golang's expfmt encoder for the kinds pier exports (counters,
// gauges, histograms), written out here: expfmt brings content
// negotiation, OpenMetrics and protobuf framing with it, about 60 KiB of
// binary that pier does not use.
func writeText(w io.Writer, families []*dto.MetricFamily) error {
	b := bufio.NewWriter(w)
	for _, f := range families {
		name := f.GetName()
		typ := "untyped"
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			typ = "counter"
		case dto.MetricType_GAUGE:
			typ = "gauge"
		case dto.MetricType_HISTOGRAM:
			typ = "histogram"
		}
		b.WriteString("# HELP " + name + " " + helpEscaper.Replace(f.GetHelp()) + "\n")
		b.WriteString("# TYPE " + name + " " + typ + "\n")
		for _, m := range f.Metric {
			switch {
			case m.Counter != nil:
				sample(b, name, m.Label, "", "", m.Counter.GetValue())
			case m.Gauge != nil:
				sample(b, name, m.Label, "", "", m.Gauge.GetValue())
			case m.Untyped != nil:
				sample(b, name, m.Label, "", "", m.Untyped.GetValue())
			case m.Histogram != nil:
				h := m.Histogram
				infSeen := false
				for _, bk := range h.Bucket {
					infSeen = infSeen || math.IsInf(bk.GetUpperBound(), 1)
					sample(b, name+"_bucket", m.Label, "le", number(bk.GetUpperBound()), float64(bk.GetCumulativeCount()))
				}
				if !infSeen {
					sample(b, name+"_bucket", m.Label, "le", "+Inf", float64(h.GetSampleCount()))
				}
				sample(b, name+"_sum", m.Label, "", "", h.GetSampleSum())
				sample(b, name+"_count", m.Label, "", "", float64(h.GetSampleCount()))
			}
		}
	}
	return b.Flush()
}

// sample writes one line: name{labels[,extra="value"]} v.
func sample(b *bufio.Writer, name string, labels []*dto.LabelPair, extra, extraValue string, v float64) {
	b.WriteString(name)
	if len(labels) > 0 || extra != "" {
		b.WriteByte('{')
		for i, l := range labels {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(l.GetName() + `="` + valueEscaper.Replace(l.GetValue()) + `"`)
		}
		if extra != "" {
			if len(labels) > 0 {
				b.WriteByte(',')
			}
			b.WriteString(extra + `="` + extraValue + `"`)
		}
		b.WriteByte('}')
	}
	b.WriteByte(' ')
	b.WriteString(number(v))
	b.WriteByte('\n')
}

func number(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	valueEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)
