"""nbgrader configuration of the book's assignments (run nbgrader from this folder).

Layout (nbgrader's standard course directory):
    source/<assignment>/<assignment>.ipynb      teacher versions, with solutions and hidden tests
    release/<assignment>/                       student versions (nbgrader generate_assignment)
    submitted/<student>/<assignment>/           collected submissions
    autograded/<student>/<assignment>/          executed and scored (nbgrader autograde)
    feedback/<student>/<assignment>/            HTML reports (nbgrader generate_feedback)
    gradebook.db                                the scores (nbgrader export writes grades.csv)
Only source/ is kept in git; see .gitignore.
"""

c = get_config()  # noqa: F821 (nbgrader provides get_config when it loads this file)

c.CourseDirectory.course_id = "mmlearn-book"
# Each assignment runs in well under 30 s on a CPU; this limit only stops a
# submission that hangs (an endless loop, say), cell by cell.
c.Execute.timeout = 120
