// One sample of a broker's /metrics, as Prometheus would read it.

/**
 * The value of `series` (the metric's name with its labels, as printed: `rate_limit_fallback`,
 * `incode_circuit_state{group="start"}`) on the broker's /metrics; undefined when the series is not there.
 */
export async function metricValue(brokerUrl: string, series: string): Promise<number | undefined> {
  const text = await (await fetch(`${brokerUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}
