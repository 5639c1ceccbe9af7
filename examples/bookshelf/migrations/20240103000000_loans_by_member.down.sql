drop index loans_by_member;
