// Jest reporter: lists skipped tests by name and writes artifacts/test-summary.json for .ci/run's summary line.
const { mkdirSync, writeFileSync } = require('node:fs');
const { join } = require('node:path');

class SummaryReporter {
  constructor(globalConfig) {
    this.rootDir = globalConfig.rootDir;
  }

  onRunComplete(_contexts, results) {
    const skipped = [];
    // A suite that could not run is a failure (counted in `failed` below), never listed among the skipped tests.
    const failedToRun = [];
    for (const file of results.testResults) {
      for (const t of file.testResults) if (t.status === 'pending' || t.status === 'skipped') skipped.push(t.fullName);
      if (file.testExecError) failedToRun.push(file.testFilePath);
    }
    if (skipped.length) {
      process.stdout.write(`\nSkipped tests (${skipped.length}):\n`);
      for (const name of skipped) process.stdout.write(`  - ${name}\n`);
    }
    if (failedToRun.length) {
      process.stdout.write(`\nSuites that failed to run (${failedToRun.length}):\n`);
      for (const path of failedToRun) process.stdout.write(`  - ${path}\n`);
    }
    const summary = {
      passed: results.numPassedTests,
      failed: results.numFailedTests + results.numRuntimeErrorTestSuites,
      skipped: results.numPendingTests + results.numTodoTests,
      suitesFailed: results.numFailedTestSuites,
      skippedNames: skipped,
      failedToRun,
    };
    const dir = join(this.rootDir, 'artifacts');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'test-summary.json'), JSON.stringify(summary, null, 2));
  }
}

module.exports = SummaryReporter;
