package syncd

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus metrics.
type metrics struct {
	requests       *prometheus.CounterVec
	latency        *prometheus.HistogramVec
	pushes         *prometheus.CounterVec
	changesApplied prometheus.Counter
	changesPulled  prometheus.Counter
	logins         *prometheus.CounterVec

	connected        prometheus.Gauge
	framesSent       prometheus.Counter
	changesSent      prometheus.Counter
	sendDrops        prometheus.Counter
	acks             prometheus.Counter
	rejects          prometheus.Counter
	revocationCloses prometheus.Counter
	auditDropped     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "therasync_http_requests_total",
			Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "therasync_http_request_duration_seconds",
			Help:    "HTTP request latency by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route"}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "therasync_practice_pushes_total",
			Help: "Practice change batches by result: applied, repeated (batch_id seen before) or rejected.",
		}, []string{"result"}),
		changesApplied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "therasync_changes_applied_total",
			Help: "Changes committed to a tenant's change log by practice pushes.",
		}),
		changesPulled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "therasync_changes_pulled_total",
			Help: "Changes served by GET /v1/practice/changes.",
		}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "therasync_device_logins_total",
			Help: "Device logins by result: ok or the error code.",
		}, []string{"result"}),
		connected:        prometheus.NewGauge(prometheus.GaugeOpts{Name: "therasync_live_connections", Help: "Live sync connections (devices and practice PCs)."}),
		framesSent:       prometheus.NewCounter(prometheus.CounterOpts{Name: "therasync_frames_sent_total", Help: "WebSocket frames sent."}),
		changesSent:      prometheus.NewCounter(prometheus.CounterOpts{Name: "therasync_changes_sent_total", Help: "Changes streamed to live connections."}),
		sendDrops:        prometheus.NewCounter(prometheus.CounterOpts{Name: "therasync_send_queue_drops_total", Help: "Connections dropped because their send queue was full."}),
		acks:             prometheus.NewCounter(prometheus.CounterOpts{Name: "therasync_mutations_acked_total", Help: "Device mutations acknowledged."}),
		rejects:          prometheus.NewCounter(prometheus.CounterOpts{Name: "therasync_mutations_rejected_total", Help: "Device mutations rejected."}),
		revocationCloses: prometheus.NewCounter(prometheus.CounterOpts{Name: "therasync_revocation_closes_total", Help: "Live connections closed by a revocation."}),
		auditDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "therasync_audit_lines_dropped_total",
			Help: "Failed-login audit lines dropped because the audit buffer was full (each tenant's count is written as one audit_dropped line)."}),
	}
	reg.MustRegister(m.requests, m.latency, m.pushes, m.changesApplied, m.changesPulled, m.logins,
		m.connected, m.framesSent, m.changesSent, m.sendDrops, m.acks, m.rejects, m.revocationCloses, m.auditDropped,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observeRequest(route string, status int, d time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(route).Observe(d.Seconds())
}
