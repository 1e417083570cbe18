package backup

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	positionDesc = prometheus.NewDesc("pagewire_backup_position",
		"The newest transaction (TXID) of the database in the backup.", []string{"db"}, nil)
	lagDesc = prometheus.NewDesc("pagewire_backup_lag_seconds",
		"How long the oldest transaction not yet in the backup has waited (0 when the backup has every transaction).", []string{"db"}, nil)
	uploadBytesDesc = prometheus.NewDesc("pagewire_backup_upload_bytes_total",
		"Bytes uploaded to the backup.", []string{"db"}, nil)
	uploadErrorsDesc = prometheus.NewDesc("pagewire_backup_upload_errors_total",
		"Failed uploads to the backup (each is retried).", []string{"db"}, nil)
)

// Describe implements prometheus.Collector.
func (u *Uploader) Describe(ch chan<- *prometheus.Desc) {
	ch <- positionDesc
	ch <- lagDesc
	ch <- uploadBytesDesc
	ch <- uploadErrorsDesc
}

// Collect implements prometheus.Collector: each database this node
// uploads, as of now.
func (u *Uploader) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for db, s := range u.Statuses() {
		ch <- prometheus.MustNewConstMetric(positionDesc, prometheus.GaugeValue, float64(s.Pos.TXID), db)
		ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, s.Lag(now).Seconds(), db)
		ch <- prometheus.MustNewConstMetric(uploadBytesDesc, prometheus.CounterValue, float64(s.UploadedBytes), db)
		ch <- prometheus.MustNewConstMetric(uploadErrorsDesc, prometheus.CounterValue, float64(s.Errors), db)
	}
}
