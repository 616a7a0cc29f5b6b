"""Course assignments: questions with points, judged in the grader's process against a sandboxed student's code.

An assignment's tests are a Python file of functions decorated with `@question(points=...)`; each takes
the student's module (a proxy: every call runs in the student's own sandboxed process) and raises
`AssertionError` with a helpful message when an answer is wrong. `grade(student_file, tests_files)`
runs them with a time limit per question, so broken or hostile student code fails questions, never
the grader, and never earns what it did not compute.
"""

from lab.grading.grader import GradeReport, QuestionResult, grade
from lab.grading.questions import Question, check_close, check_equal, question

__all__ = ["GradeReport", "Question", "QuestionResult", "check_close", "check_equal", "grade", "question"]
