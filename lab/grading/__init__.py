"""Course assignments: questions with points, run against a student's file in a separate process.

An assignment's tests are a Python file of functions decorated with `@question(points=...)`; each takes
the student's module and raises `AssertionError` with a helpful message when an answer is wrong.
`grade(student_file, tests_file)` runs them in a child process with a time limit per question, so
broken student code (exceptions, syntax errors, infinite loops) fails questions, never the grader.
"""

from lab.grading.grader import GradeReport, QuestionResult, grade
from lab.grading.questions import Question, check_close, question

__all__ = ["GradeReport", "Question", "QuestionResult", "check_close", "grade", "question"]
