// Package batchjob runs one job through the batch mode of AI Studio (docs/api.md §9) from a
// checkpoint, crash-safe at every step: the rows the result cache cannot answer are uploaded as
// one dataset, validated, answered by one batch task, and joined back to the input rows by their
// request's content.
//
// Every call that creates or changes something is announced by a step journaled in the
// checkpoint (a B record, store.Writer.Step) before it is made, and its outcome by another after:
//
//	creating       {gen, name, labels, rows}   CreateDataset is next; rows is the dataset's rows
//	created        {gen, dataset}
//	uploaded       {gen, dataset, size, sha256}
//	validated      {gen, dataset, valid, errors}
//	task_starting  {dataset}                   StartTask is next
//	task_started   {task, operation}
//	progress       {status, completed, total}  as last seen, journaled when it changes
//	results_fetched                            every row is resolved, durably
//	cancel         {task}                      batchgpt cancel asked for the task to stop
//	cleaned                                    --cleanup deleted the datasets and the task
//
// On resume a step whose outcome was not journaled is looked up before it is repeated: a
// "creating" without "created" looks for a dataset with the run's labels (a random run label,
// written in "creating"), a "task_starting" without "task_started" for a task over the source
// dataset. Only when the lookup finds nothing is the call made again, so a run never has two
// tasks, and a dataset found READY is never uploaded again.
//
// A dataset some of whose lines fail validation is not used: those rows fail with the line's
// message, and a new dataset (the next generation, gen) of the valid rows is created.
package batchjob
