"""Operations verbs (maintain, status, monitor): empty until their issues land."""
